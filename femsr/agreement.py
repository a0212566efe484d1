"""Agreement of reconstructions with their references over a set of femurs, per ROI.

What bone researchers report when a method measures the same bone as a reference one: per ROI
and measure, the means of both, the squared Pearson correlation (R²) and the Bland-Altman bias
and 95 % limits of agreement (Bland & Altman 1986, Lancet 327:307) of the paired values over the
femurs. The measures (:func:`roi_measures`) are the morphometry of
:func:`femsr.morphometry.morphometry` (BV/TV, mean Tb.Th, mean Tb.Sp, Tb.N, DA) and the three
apparent stiffnesses of :func:`femsr.evaluate.roi_table`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from femsr import evaluate, morphometry
from femsr.femur import Femur

__all__ = ["MORPHOMETRY", "ROIS", "agreement", "agreement_table", "roi_measures"]

MORPHOMETRY = {
    "bvtv": "BV/TV",
    "tb_th_mean": "Tb.Th (mm)",
    "tb_sp_mean": "Tb.Sp (mm)",
    "tb_n": "Tb.N (1/mm)",
    "da": "DA",
}
"""The morphometry columns compared, and their names in the tables."""

ROIS = {"roi_head": "head", "roi_neck": "neck", "roi_intertrochanteric": "intertrochanteric"}
"""The three ROIs: their regions of :data:`femsr.morphometry.REGIONS`, and their names in
:meth:`femsr.femur.Femur.rois`."""
_LIMITS = 1.96  # standard deviations of the differences that hold 95 % of them, if normal


def roi_measures(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    femur: Femur,
    pixel_size: float,
    *,
    E0: float,
    threshold: float = 0.5,
    stiffness: evaluate.Table | None = None,
    reference_morphometry: list[dict[str, Any]] | None = None,
) -> evaluate.Table:
    """Each ROI's morphometry and apparent stiffness in the reference and the reconstruction.

    Parameters
    ----------
    reference, reconstruction : ndarray, shape ``grid_shape(pixel_size)``
        Density images in [0, 1] of ``femur``.
    femur : Femur
        Places the ROIs and the compartments.
    pixel_size : float
        Pixel side (mm).
    E0 : float
        Tissue modulus (MPa) of the stiffness.
    threshold : float
        Bone is ``density > threshold``.
    stiffness : Table, optional
        :func:`femsr.evaluate.roi_table` of the two images, where it is already computed.
    reference_morphometry : list of dict, optional
        :func:`femsr.morphometry.morphometry` of the reference, where it is already computed
        (one reference against several reconstructions).

    Returns
    -------
    Table
        Columns ``region, measure, reference, reconstruction``: per ROI (the paper's names),
        the measures of :data:`MORPHOMETRY` by their names, then ``E_x``, ``E_y``, ``E_xy``
        (MPa).
    """
    if reference_morphometry is None:
        reference_morphometry = morphometry.morphometry(
            reference, femur, pixel_size, threshold=threshold, only=tuple(ROIS)
        )
    recon_rows = morphometry.morphometry(
        reconstruction, femur, pixel_size, threshold=threshold, only=tuple(ROIS)
    )
    tables = [{row["region"]: row for row in rows} for rows in (reference_morphometry, recon_rows)]
    if stiffness is None:
        stiffness = evaluate.roi_table(
            reference, reconstruction, femur.rois(pixel_size), E0=E0, h=pixel_size
        )
    rows: list[dict[str, Any]] = []
    for key, roi in ROIS.items():
        region = evaluate.REGION_NAMES[roi]
        for column, name in MORPHOMETRY.items():
            rows.append(
                {
                    "region": region,
                    "measure": name,
                    "reference": tables[0][key][column],
                    "reconstruction": tables[1][key][column],
                }
            )
        rows.extend(
            {
                "region": region,
                "measure": row["stiffness"],
                "reference": row["reference"],
                "reconstruction": row["reconstruction"],
            }
            for row in stiffness.rows
            if row["region"] == region
        )
    return evaluate.Table(("region", "measure", "reference", "reconstruction"), tuple(rows))


def agreement(reference: Sequence[float], reconstruction: Sequence[float]) -> dict[str, float]:
    """Agreement of paired values: means, R², Bland-Altman bias and limits of agreement.

    Pairs where either value is NaN are left out. The bias is the mean of ``reconstruction -
    reference`` (negative: an underestimate), the limits ``bias ∓ 1.96 sd`` of those
    differences (NaN with fewer than two pairs), R² the squared Pearson correlation (NaN with
    fewer than three pairs or where either side does not vary).

    Examples
    --------
    >>> row = agreement([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    >>> row["bias"], row["loa_low"], row["loa_high"], round(row["r2"], 12)
    (0.5, 0.5, 0.5, 1.0)
    """
    a = np.asarray(reference, dtype=float)
    b = np.asarray(reconstruction, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two sequences of the same length, got shapes {a.shape}, {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = a.size
    difference = b - a
    bias = float(difference.mean()) if n else math.nan
    spread = _LIMITS * float(difference.std(ddof=1)) if n > 1 else math.nan
    varies = n > 2 and np.ptp(a) > 0 and np.ptp(b) > 0
    r2 = float(np.corrcoef(a, b)[0, 1] ** 2) if varies else math.nan
    return {
        "n": n,
        "reference": float(a.mean()) if n else math.nan,
        "reconstruction": float(b.mean()) if n else math.nan,
        "r2": r2,
        "bias": bias,
        "loa_low": bias - spread,
        "loa_high": bias + spread,
    }


def agreement_table(rows: Iterable[dict[str, Any]]) -> evaluate.Table:
    """Per region and measure, the :func:`agreement` of the rows' paired values.

    ``rows`` are rows of :func:`roi_measures` of several femurs (any extra keys, such as the
    femur's name, are ignored); groups keep the order of their first row.
    """
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in rows:
        key = (row["region"], row["measure"])
        groups.setdefault(key, []).append((row["reference"], row["reconstruction"]))
    table = []
    for (region, measure), pairs in groups.items():
        reference, reconstruction = zip(*pairs, strict=True)
        table.append({"region": region, "measure": measure, **agreement(reference, reconstruction)})
    columns = ("region", "measure", "n", "reference", "reconstruction", "r2", "bias")
    return evaluate.Table((*columns, "loa_low", "loa_high"), tuple(table))
