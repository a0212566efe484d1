"""The dataset's femurs before they grow: names, femur seeds, bone masses and splits.

:func:`manifest` draws them all from one seed; :func:`femsr.generate.generate` writes them to
``manifest.json`` (:data:`MANIFEST`) in the dataset's folder and grows each femur.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femsr import femur as femur_module

__all__ = ["MANIFEST", "PAPER_PROTOCOL", "VOLFRAC_RANGE", "manifest", "paper_protocol"]

MANIFEST = "manifest.json"
VOLFRAC_RANGE = (0.25, 0.35)
"""Trabecular BV/TV (the mean over the compartment) that :func:`manifest` draws from.

The floor is what a 2-D lattice of trabeculae can hold. A strut reads as a trabecula at 50 µm
from three pixels (0.15 mm) up, and struts of thickness t running two ways at area fraction φ
leave cells about 2t/φ wide; the intertrochanteric ROI holds about 0.6-0.7 of the mean, so below
a mean of 0.25 its median Tb.Sp passes 1.5 mm (of the femurs grown at 0.16-0.23 under
:data:`femsr.generate.STAGES`, 9 of 11 missed that or the 5 mm void; all 12 at 0.25-0.35 met
every target). Real proximal femurs go lower (femoral head 0.26 +- 0.06: Hildebrand et al. 1999,
J Bone Miner Res 14:1167): a section of 3-D bone cuts its rods and plates into separate
profiles, closer together than a connected 2-D lattice of the same area fraction can hold them.
Osteoporotic masses are outside what femsr grows."""


def manifest(
    count: int = 32, test: int = 8, validation: int = 4, seed: int = 0
) -> list[dict[str, Any]]:
    """Names, femur seeds, bone masses and splits of a dataset, all from ``seed``.

    The trabecular bone volume fraction is stratified over :data:`VOLFRAC_RANGE` (one draw in
    each of ``count`` equal slices, in random order); each femur is :func:`femsr.femur.sample`
    of its seed. The held-out femurs spread over the two ranges that matter most, bone mass and
    neck-shaft angle (each scaled to [0, 1]): the ``test`` femurs are the ones nearest the four
    corners, then, one at a time, the one farthest from those chosen; the ``validation`` femurs
    are chosen the same way, without the corners, from the rest. The other femurs train.

    Examples
    --------
    >>> [e["split"] for e in manifest(5, 2, 1)].count("train")
    2
    """
    if count < 1 or test < 0 or validation < 0 or test + validation > count:
        raise ValueError(
            "need count >= 1 and test, validation >= 0 with test + validation <= count, got "
            f"count {count}, test {test}, validation {validation}"
        )
    rng = np.random.default_rng(seed)
    low, high = VOLFRAC_RANGE
    volfracs = low + (high - low) * (rng.permutation(count) + rng.uniform(size=count)) / count
    seeds = rng.integers(0, 2**31, count)
    angles = [femur_module.sample(int(s)).landmarks().neck_shaft_angle for s in seeds]
    points = _unit_points(volfracs, angles)
    splits = ["train"] * count
    chosen = _spread(points, test, [], corners=True)
    for k in chosen:
        splits[k] = "test"
    for k in _spread(points, validation, chosen, corners=False):
        splits[k] = "validation"
    return [
        {
            "name": f"femur_{k:02d}",
            "file": f"femur_{k:02d}.npz",
            "seed": int(seeds[k]),
            "volfrac": round(float(volfracs[k]), 4),
            "neck_shaft_angle": round(angles[k], 2),
            "split": splits[k],
        }
        for k in range(count)
    ]


PAPER_PROTOCOL = {"train": 7, "test": 4}
"""Femurs to train and to test on in Kim, Nam & Jang's protocol."""


def paper_protocol(entries: list[dict[str, Any]], split: str) -> list[str]:
    """The names of a dataset's ``split`` femurs that follow the paper's protocol.

    Kim, Nam & Jang trained on 7 femurs and tested on 4 (:data:`PAPER_PROTOCOL`). ``entries``
    are a manifest's (or a patch dataset's index's) femurs, each with its ``name``, ``split``,
    ``volfrac`` and ``neck_shaft_angle``. The femurs of ``split`` ("train" or "test") are chosen
    over bone mass and neck-shaft angle as :func:`manifest` chooses the held-out ones: the
    nearest to each corner of the two ranges first, then, one at a time, the farthest from those
    chosen, so that the subset spans the ranges as the whole dataset does. The validation femurs
    are not part of it and still choose a model.

    Examples
    --------
    >>> entries = manifest(16, 4, 2)
    >>> len(paper_protocol(entries, "train")), len(paper_protocol(entries, "test"))
    (7, 4)
    """
    if split not in PAPER_PROTOCOL:
        raise ValueError(f"the paper's protocol has splits {list(PAPER_PROTOCOL)}, not {split!r}")
    count = PAPER_PROTOCOL[split]
    members = [e for e in entries if e["split"] == split]
    if len(members) < count:
        raise ValueError(
            f"the paper's protocol needs {count} {split} femurs, the dataset has {len(members)}"
        )
    unknown = [
        e["name"] for e in members if e.get("volfrac") is None or e.get("neck_shaft_angle") is None
    ]
    if unknown:
        raise ValueError(
            f"femurs {unknown} lack the volfrac or neck_shaft_angle that the paper's protocol "
            "is chosen by"
        )
    points = _unit_points(
        np.array([e["volfrac"] for e in members]), [e["neck_shaft_angle"] for e in members]
    )
    return [members[k]["name"] for k in _spread(points, count, [], corners=True)]


def _unit_points(volfracs: np.ndarray, angles: list[float]) -> np.ndarray:
    """(bone mass, neck-shaft angle) of femurs, each scaled from its range to [0, 1]."""
    low, high = VOLFRAC_RANGE
    angle_low, angle_high = femur_module.RANGES["neck_shaft_angle"]
    return np.column_stack(
        [(volfracs - low) / (high - low), (np.array(angles) - angle_low) / (angle_high - angle_low)]
    )


def _spread(points: np.ndarray, count: int, taken: list[int], *, corners: bool) -> list[int]:
    """Indices of ``count`` of ``points`` (in the unit square) outside ``taken`` that spread
    over it: the nearest to each corner first (with ``corners``), then greedily the farthest
    from every point taken so far (which includes ``taken``)."""
    chosen: list[int] = []
    free = np.ones(len(points), bool)
    free[taken] = False
    targets = [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)] if corners else []
    while len(chosen) < count:
        if len(chosen) < len(targets):
            distance = np.linalg.norm(points - targets[len(chosen)], axis=1)
            pick = int(np.argmin(np.where(free, distance, np.inf)))
        else:
            held = points[~free]
            if len(held) == 0:
                pick = int(np.flatnonzero(free)[0])
            else:
                gaps = np.linalg.norm(points[:, None] - held[None], axis=2).min(axis=1)
                pick = int(np.argmax(np.where(free, gaps, -np.inf)))
        chosen.append(pick)
        free[pick] = False
    return chosen
