"""Fixtures shared by test modules."""

import numpy as np
import pytest
from scipy import ndimage


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    """A tiny patch dataset: two training femurs at 1 mm, LR 4 mm, 4 x 4 windows at stride 3."""
    from femsr.dataset import build_dataset
    from femsr.femur import Femur
    from femsr.io import FemurImage

    images = []
    for k in range(2):
        mask = Femur().mask(1.0)
        noise = ndimage.gaussian_filter(np.random.default_rng(k).standard_normal(mask.shape), 1.5)
        density = np.where(mask, np.clip(0.5 + 6 * noise, 0.0, 1.0), 0.0)
        meta = {"name": f"femur_{k:02d}", "split": "train", "volfrac": 0.5}
        images.append(FemurImage(density, 1.0, Femur(), meta))
    out = tmp_path_factory.mktemp("patches")
    build_dataset(images, out, patch=4, stride=3, factor=4, progress=False)
    return out


@pytest.fixture
def stiffness_solves(monkeypatch):
    """The density batches that femsr.losses solves for apparent stiffness from here on, with
    no target's stiffness kept from before."""
    from femsr import losses

    solved = []
    solve = losses.apparent_stiffness

    def counted(density, **options):
        solved.append(density)
        return solve(density, **options)

    monkeypatch.setattr(losses, "apparent_stiffness", counted)
    monkeypatch.setattr(losses, "_REFERENCES", {})
    return solved
