"""The paper's Table 1 on the held-out femurs: each model's mean stiffness error per ROI.

:func:`heldout_report` reconstructs every held-out femur from its 500 µm block mean with each
trained model (:func:`femsr.reconstruct`), computes the apparent stiffness of the femur's three
ROIs in the reference and the reconstruction (:func:`femsr.evaluate.roi_table`), and averages
the error magnitudes over the femurs, beside the numbers of Kim, Nam & Jang's Table 1 (ResNet
with the L1 and the L2 loss, averages over their test femurs).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from femsr import agreement, dataset, defaults, evaluate, io, morphometry
from femsr.crisp import draw_struts
from femsr.reconstruct import reconstruct
from femsr.refine import redraw
from femsr.refine import refine as refine_density

__all__ = ["PAPER_TABLE1", "choose_model", "crisp_label", "heldout_report", "refine_label"]

logger = logging.getLogger(__name__)

# Kim, Nam & Jang, Table 1: average apparent-stiffness errors (%) of ResNet with the L1 and with
# the L2 loss; every one an underestimate.
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("Femoral head", "E_x"): (83.84, 55.35),
    ("Femoral head", "E_y"): (72.88, 42.92),
    ("Femoral head", "E_xy"): (81.13, 30.73),
    ("Femoral neck", "E_x"): (98.67, 69.13),
    ("Femoral neck", "E_y"): (91.17, 57.13),
    ("Femoral neck", "E_xy"): (95.66, 55.41),
    ("Intertrochanteric region", "E_x"): (92.38, 36.88),
    ("Intertrochanteric region", "E_y"): (96.99, 49.22),
    ("Intertrochanteric region", "E_xy"): (97.79, 44.15),
}


def heldout_report(
    femur_files: Sequence[str | os.PathLike[str]],
    models: Mapping[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    tta: Collection[str] = (),
    crisp: bool = False,
    refine: int = 0,
    E0: float = defaults.TISSUE_MODULUS,
    progress: bool = True,
) -> evaluate.Table:
    """Mean apparent-stiffness error of each model over held-out femurs, beside the paper's.

    Parameters
    ----------
    femur_files : sequence of path
        Femur files (:func:`femsr.io.save_femur`) with the HR reference densities.
    models : mapping of str to path
        Label (e.g. ``"L1"``) to exported model file.
    out_dir : path
        Gets ``heldout.md`` (both summaries), ``heldout.csv`` (the returned table),
        ``heldout_images.csv`` (mean SSIM, PSNR, |BV/TV error| and Dice per model and region),
        ``agreement.md`` and ``agreement.csv`` (per model, ROI and measure, BV/TV, Tb.Th,
        Tb.Sp, Tb.N, DA and the three stiffnesses: means, R², Bland-Altman bias and limits of
        agreement; :mod:`femsr.agreement`), ``per_femur.csv``, ``per_femur_images.csv`` and
        ``per_femur_measures.csv`` (every femur and model) and
        ``<label>/<femur>.png`` (8-bit previews of the reconstructions).
    device : str
        ``"auto"`` (CUDA if present), ``"cpu"``...
    tta : collection of str
        Labels of the models that reconstruct with test-time averaging over the 8 symmetries
        of the square (:func:`femsr.reconstruct` ``tta=True``). The same file under two labels,
        one of them here, measures what the averaging does.
    crisp : bool
        Also measure each model's reconstructions redrawn crisp at the mass of the input
        (:func:`femsr.reconstruct` ``crisp=True``) as the model ``"<label>+crisp"``
        (:func:`crisp_label`), from the same inference.
    refine : int
        Also measure each model's reconstructions refined by that many iterations of topology
        optimization at the input's block masses and redrawn crisp (:func:`femsr.reconstruct`
        ``refine``) as the model ``"<label>+refine"`` (:func:`refine_label`), from the same
        inference. 0: none.
    E0 : float
        Tissue modulus (MPa) of the stiffness computation.
    progress : bool
        Show a tqdm bar of the reconstructions on stderr. Each is logged (INFO, logger
        ``femsr.report``) whatever ``progress``.

    Returns
    -------
    Table
        One row per region and component: for each model the mean |error| % and the mean
        signed error % over the femurs, then the paper's L1 and L2 errors where the region is
        one of the paper's.
    """
    if not femur_files:
        raise ValueError("no femur files to evaluate")
    if not models:
        raise ValueError("no models to evaluate")
    unknown = sorted(set(tta) - set(models))
    if unknown:
        raise ValueError(f"tta names model(s) not evaluated: {unknown}")
    derived = [crisp_label(label) for label in models if crisp]
    derived += [refine_label(label) for label in models if refine]
    taken = sorted(set(derived) & set(models))
    if taken:
        raise ValueError(f"with crisp or refine, the label(s) {taken} would name two models")
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    image_rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    measured = _measured(
        femur_files,
        models,
        out,
        device=device,
        tta=tta,
        crisp=crisp,
        refine=refine,
        E0=E0,
        progress=progress,
    )
    for stem, label, table, measures, paired in measured:
        rows.extend({"femur": stem, "model": label, **row} for row in table.rows)
        image_rows.extend({"femur": stem, "model": label, **row} for row in measures.rows)
        pairs.extend({"femur": stem, "model": label, **row} for row in paired.rows)
    per_femur = evaluate.Table(("femur", "model", *table.columns), tuple(rows))
    per_femur_images = evaluate.Table(("femur", "model", *measures.columns), tuple(image_rows))
    per_femur_measures = evaluate.Table(("femur", "model", *paired.columns), tuple(pairs))
    labels = list(dict.fromkeys(row["model"] for row in rows))  # as measured, redrawn ones too
    summary = _summary(per_femur, labels)
    images = _image_summary(per_femur_images, labels)
    agreed = _agreement(pairs, labels)
    texts = {
        "per_femur_measures.csv": per_femur_measures.to_csv(),
        "agreement.csv": agreed.to_csv(),
        "agreement.md": (
            f"# Reference against reconstruction over {len(femur_files)} held-out femur(s), per "
            f"ROI: means, R², Bland-Altman bias and 95 % limits of agreement (reconstruction - "
            f"reference; stiffness in MPa, lengths in mm)\n\n{agreed.to_markdown()}"
        ),
        "per_femur.csv": per_femur.to_csv(),
        "per_femur_images.csv": per_femur_images.to_csv(),
        "heldout.csv": summary.to_csv(),
        "heldout_images.csv": images.to_csv(),
        "heldout.md": (
            f"# Apparent-stiffness error on {len(femur_files)} held-out femur(s), % (mean "
            f"|error| and mean signed error; negative = underestimate) over the femurs whose "
            f"reference ROI holds bone (stiffness >= {evaluate.BONELESS_STIFFNESS:g} E0)\n\n"
            f"{summary.to_markdown()}\n"
            f"# Image measures, mean over the femurs (bone: density > 0.5; Tb.Th in mm)\n\n"
            f"{images.to_markdown()}"
        ),
    }
    for name, text in texts.items():
        with io.atomic_write(out / name, "w") as stream:
            stream.write(text)
    return summary


def crisp_label(label: str) -> str:
    """The label of a model's reconstructions redrawn crisp in a report."""
    return f"{label}+crisp"


def refine_label(label: str) -> str:
    """The label of a model's reconstructions refined and redrawn crisp in a report."""
    return f"{label}+refine"


def choose_model(
    report_dir: str | os.PathLike[str],
    *,
    bvtv_error: float = 10.0,
    tbth_ratio: float = 1.5,
    mass_error: float = 2.0,
) -> tuple[str, dict[str, float]]:
    """The model to bundle, from a :func:`heldout_report` on the validation femurs.

    The rule: the smallest sum of the nine mean |stiffness errors| (a component whose
    reference ROI held no bone in any femur counts for none), among the models whose bone is
    like the reference's in every ROI (the whole femur aside): mean |BV/TV error| at most
    ``bvtv_error`` %, mean Tb.Th at most ``tbth_ratio`` times the reference's and mean |error|
    of the bone mass (the mean density, which the 500 µm input fixes) at most ``mass_error`` %.
    Without that guard, too much bone in too-thick struts would win on stiffness: it stiffens
    what broken struts soften, and trabecular stiffness grows with the square of the mass or
    faster.

    Parameters
    ----------
    report_dir : path
        A folder written by :func:`heldout_report` (``heldout.csv``, ``heldout_images.csv``).
    bvtv_error, tbth_ratio, mass_error : float
        The guard's bounds.

    Returns
    -------
    label : str
        The chosen model.
    sums : dict of str to float
        Every model's sum of the nine mean |errors| %, the excluded ones too.

    Raises
    ------
    ValueError
        If no model passes the guard (the reasons per model in the message).
    """
    folder = Path(report_dir)
    errors = list(csv.DictReader((folder / "heldout.csv").read_text().splitlines()))
    images = list(csv.DictReader((folder / "heldout_images.csv").read_text().splitlines()))
    labels = list(dict.fromkeys(row["model"] for row in images))
    sums = {
        label: sum(e for row in errors if math.isfinite(e := float(row[f"{label} |error| %"])))
        for label in labels
    }
    failures: dict[str, list[str]] = {label: [] for label in labels}
    for row in images:
        if row["region"] not in evaluate.REGION_NAMES.values():
            continue
        if "mass_abs_error_percent" not in row:
            raise ValueError(
                f"{folder / 'heldout_images.csv'} has no bone-mass column: rerun femsr report"
            )
        bvtv = float(row["bvtv_abs_error_percent"])
        mass = float(row["mass_abs_error_percent"])
        ratio = float(row["tbth_reconstruction"]) / float(row["tbth_reference"])
        if bvtv > bvtv_error:
            failures[row["model"]].append(f"{row['region']} |BV/TV error| {bvtv:.1f} %")
        if mass > mass_error:
            failures[row["model"]].append(f"{row['region']} |mass error| {mass:.1f} %")
        if ratio > tbth_ratio:
            failures[row["model"]].append(f"{row['region']} Tb.Th {ratio:.2f} x the reference's")
    eligible = [label for label in labels if not failures[label]]
    if not eligible:
        reasons = "; ".join(f"{label}: {', '.join(failures[label])}" for label in labels)
        raise ValueError(f"no model has bone like the reference's ({reasons})")
    return min(eligible, key=sums.__getitem__), sums


def _measured(
    femur_files: Sequence[str | os.PathLike[str]],
    models: Mapping[str, str | os.PathLike[str]],
    out: Path,
    *,
    device: str,
    tta: Collection[str],
    crisp: bool,
    refine: int,
    E0: float,
    progress: bool,
) -> Iterator[tuple[str, str, evaluate.Table, evaluate.Table, evaluate.Table]]:
    """Each femur reconstructed by each model and measured against its reference.

    Yields the femur's name, the model's label, and the ROI stiffness
    (:func:`femsr.evaluate.roi_table`), image (:func:`femsr.evaluate.image_table`) and paired
    (:func:`femsr.agreement.roi_measures`) tables; writes each reconstruction's preview.
    """
    bar = tqdm(
        total=len(femur_files) * len(models),
        desc="report",
        unit="reconstruction",
        dynamic_ncols=True,
        disable=not progress,
    )
    for path in map(Path, femur_files):
        reference = io.load_femur(path)
        shape = reference.density.shape
        lr = dataset.downscale_femur(reference)
        rois = reference.femur.rois(reference.pixel_size)
        mask = reference.femur.mask(reference.pixel_size)
        reference_rows = morphometry.morphometry(
            reference.density, reference.femur, reference.pixel_size, only=tuple(agreement.ROIS)
        )
        for label, model in models.items():
            stats: dict[str, float] = {}
            hr = reconstruct(lr, model=model, device=device, tta=label in tta, stats=stats)
            drawn = {label: hr[: shape[0], : shape[1]]}
            scale = hr.shape[0] // lr.density.shape[0]
            if crisp:
                redrawn = draw_struts(hr, scale, mass=lr.density)
                drawn[crisp_label(label)] = redrawn[: shape[0], : shape[1]]
            if refine:
                problem = reference.femur.problem(reference.pixel_size)
                refined = refine_density(hr, lr.density, problem, iterations=refine)
                redrawn = redraw(refined, lr.density)
                drawn[refine_label(label)] = redrawn[: shape[0], : shape[1]]
            for name, image in drawn.items():
                io.write_image(out / name / f"{path.stem}.png", image, bits=8)
                table = evaluate.roi_table(
                    reference.density, image, rois, E0=E0, h=reference.pixel_size
                )
                measures = evaluate.image_table(
                    reference.density, image, rois, mask=mask, pixel_size=reference.pixel_size
                )
                paired = agreement.roi_measures(
                    reference.density,
                    image,
                    reference.femur,
                    reference.pixel_size,
                    E0=E0,
                    stiffness=table,
                    reference_morphometry=reference_rows,
                )
                errors = [abs(row["error_percent"]) for row in table.rows]
                worst = max((e for e in errors if not math.isnan(e)), default=math.nan)
                logger.info(
                    "report: %s with %s: %.1f s, largest |error| %.1f %%",
                    path.stem,
                    name,
                    stats["total"],
                    worst,
                )
                yield path.stem, name, table, measures, paired
            bar.update()
    bar.close()


def _image_summary(per_femur: evaluate.Table, labels: list[str]) -> evaluate.Table:
    """Mean SSIM, PSNR, |BV/TV error|, Dice and Tb.Th (reference, reconstruction) per model
    and region."""
    regions = list(dict.fromkeys(row["region"] for row in per_femur.rows))
    rows = []
    for label in labels:
        for region in regions:
            mine = [r for r in per_femur.rows if (r["model"], r["region"]) == (label, region)]
            rows.append(
                {
                    "model": label,
                    "region": region,
                    "ssim": float(np.mean([r["ssim"] for r in mine])),
                    "psnr_db": float(np.mean([r["psnr_db"] for r in mine])),
                    "bvtv_abs_error_percent": _finite_mean(
                        [abs(r["bvtv_error_percent"]) for r in mine]
                    ),
                    "mass_abs_error_percent": _finite_mean(
                        [abs(r["mass_error_percent"]) for r in mine]
                    ),
                    "dice": float(np.mean([r["dice"] for r in mine])),
                    "tbth_reference": float(np.mean([r["tbth_reference"] for r in mine])),
                    "tbth_reconstruction": float(np.mean([r["tbth_reconstruction"] for r in mine])),
                }
            )
    columns = (
        "model",
        "region",
        "ssim",
        "psnr_db",
        "bvtv_abs_error_percent",
        "mass_abs_error_percent",
        "dice",
        "tbth_reference",
        "tbth_reconstruction",
    )
    return evaluate.Table(columns, tuple(rows))


def _agreement(pairs: list[dict[str, Any]], labels: list[str]) -> evaluate.Table:
    """:func:`femsr.agreement.agreement_table` of each model's pairs, a model column first."""
    rows: list[dict[str, Any]] = []
    for label in labels:
        table = agreement.agreement_table(r for r in pairs if r["model"] == label)
        rows.extend({"model": label, **row} for row in table.rows)
    return evaluate.Table(("model", *table.columns), tuple(rows))


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN, without a warning, where there are none (no reference
    ROI held bone)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _summary(per_femur: evaluate.Table, labels: list[str]) -> evaluate.Table:
    keys = list(dict.fromkeys((row["region"], row["stiffness"]) for row in per_femur.rows))
    columns = ["region", "stiffness"]
    for label in labels:
        columns += [f"{label} |error| %", f"{label} signed %", f"{label} femurs"]
    columns += ["paper L1 %", "paper L2 %"]
    rows = []
    for region, component in keys:
        row: dict[str, Any] = {"region": region, "stiffness": component}
        for label in labels:
            errors = np.array(
                [
                    r["error_percent"]
                    for r in per_femur.rows
                    if (r["model"], r["region"], r["stiffness"]) == (label, region, component)
                ]
            )
            errors = errors[np.isfinite(errors)]  # NaN: no bone in the reference ROI
            row[f"{label} |error| %"] = float(np.abs(errors).mean()) if errors.size else math.nan
            row[f"{label} signed %"] = float(errors.mean()) if errors.size else math.nan
            row[f"{label} femurs"] = errors.size
        paper = PAPER_TABLE1.get((region, component))
        row["paper L1 %"] = paper[0] if paper else ""
        row["paper L2 %"] = paper[1] if paper else ""
        rows.append(row)
    return evaluate.Table(tuple(columns), tuple(rows))
