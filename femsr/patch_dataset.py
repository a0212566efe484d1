"""The patch pairs of a dataset folder (:func:`femsr.dataset.build_dataset`) as a torch Dataset.

The one module of the training data that imports torch, so that ``import femsr.dataset`` (and
``import femsr``) never does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from femsr.dataset import SPLITS, load_index
from femsr.encoding import transform

__all__ = ["PatchDataset"]


class PatchDataset(Dataset):
    """Patch pairs of a dataset folder as a map-style torch ``Dataset``.

    Items are ``(lr, hr)`` float32 tensors of shapes ``(1 + 2*ncases, P, P)`` and
    ``(1, P*factor, P*factor)`` (HR in [0, 1]), what :func:`femsr.train.train` expects.
    The arrays are memory-mapped (opened on first access in each process, so DataLoader
    workers open their own maps), so a dataset larger than memory trains.

    Parameters
    ----------
    folder : path
        A folder written by :func:`femsr.dataset.build_dataset`.
    split : {"train", "validation", "test"} or None
        Which femurs; None: those of every split (narrowed by ``femurs``).
    augment : bool
        Apply one of the eight symmetries of the square (:func:`~femsr.encoding.transform`)
        per item, drawn from ``(seed, epoch, index)``: the same draw in every process and
        DataLoader worker, whatever order the items are read in, so that training on several
        processes sees what one process sees, and a resumed run draws again what it drew.
    femurs : sequence of str, optional
        Only these femurs of the split (e.g. one held out for validation).
    seed : int
        Seeds the symmetries.

    Attributes
    ----------
    epoch : int
        The epoch whose symmetries are drawn (:meth:`set_epoch`; :func:`femsr.train.train`
        sets it before each epoch); 0 at first.

    Raises
    ------
    FileNotFoundError, ValueError
        If the folder is not a dataset, a femur is unknown, or no femur is selected.

    Examples
    --------
    >>> import tempfile
    >>> from femsr.dataset import build_dataset
    >>> from femsr.femur import Femur
    >>> from femsr.io import FemurImage
    >>> image = FemurImage(0.4 * Femur().mask(0.4), 0.4, Femur(), {"name": "f"})
    >>> folder = tempfile.mkdtemp()
    >>> _ = build_dataset([image], folder, patch=4, stride=4, factor=5, progress=False)
    >>> data = PatchDataset(folder, "train", augment=True)
    >>> lr, hr = data[0]
    >>> len(data), tuple(lr.shape), tuple(hr.shape), hr.dtype
    (91, (7, 4, 4), (1, 20, 20), torch.float32)
    >>> bool((data[0][0] == lr).all())  # the same draw for the item within an epoch
    True
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        split: str | None = "train",
        *,
        augment: bool = False,
        femurs: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.folder = Path(folder)
        self.index = load_index(folder)
        known = {entry["name"] for entry in self.index["femurs"]}
        unknown = sorted(set(femurs or ()) - known)
        if unknown:
            raise ValueError(f"unknown femur(s) {unknown}; the dataset has {sorted(known)}")
        self.entries = [
            entry
            for entry in self.index["femurs"]
            if split in (None, entry["split"]) and (femurs is None or entry["name"] in femurs)
        ]
        if not self.entries or not sum(entry["count"] for entry in self.entries):
            which = "any split" if split is None else f"split {split!r}"
            raise ValueError(f"no patch pairs of {which} in {str(folder)!r}")
        self.split = split
        self.augment = bool(augment)
        self.seed, self.epoch = int(seed), 0
        self.offsets = np.cumsum([0] + [entry["count"] for entry in self.entries])
        settings = self.index["settings"]
        self.patch, self.factor = settings["patch"], settings["factor"]
        self.in_channels = len(self.index["channels"])
        self._maps: list[tuple[np.ndarray, np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the symmetries of epoch ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}  # workers map the files themselves

    def _arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._maps is None:
            self._maps = [
                (
                    np.load(self.folder / entry["lr"], mmap_mode="r"),
                    np.load(self.folder / entry["hr"], mmap_mode="r"),
                )
                for entry in self.entries
            ]
        return self._maps

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(item) + (len(self) if item < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"index {item} is out of range for {len(self)} patch pairs")
        femur = int(np.searchsorted(self.offsets, index, side="right")) - 1
        lr_map, hr_map = self._arrays()[femur]
        row = index - int(self.offsets[femur])
        lr = np.asarray(lr_map[row], dtype=np.float32)
        hr = np.asarray(hr_map[row], dtype=np.float32)
        if hr_map.dtype == np.uint8:
            hr /= 255.0
        if self.augment:
            entropy = [self.seed % 2**64, self.epoch % 2**64, index]
            draw = int(np.random.default_rng(entropy).integers(8))
            lr, hr = transform(lr, draw % 4, draw >= 4), transform(hr, draw % 4, draw >= 4)
        return torch.from_numpy(np.ascontiguousarray(lr)), torch.from_numpy(
            np.ascontiguousarray(hr)
        )
