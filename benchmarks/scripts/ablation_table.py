"""The ablation table of training settings: each measure as mean ± sd over the training seeds.

Reads ``femsr report`` folders (one or several, e.g. one per femur) whose models are labelled
``SETTING-sSEED`` (as ``device_ablation.sh`` names its runs) and prints, per setting, the nine
mean |stiffness errors| (each the mean over the femurs of one seed's model, of those whose
reference ROI holds bone), the worst single-femur |error|, and the mean SSIM, Dice, |BV/TV
error|, |bone mass error| and Tb.Th over the ROIs and femurs, each as mean ± sample sd over the
seeds.

    python benchmarks/scripts/ablation_table.py out/report_femur_01 out/report_femur_14 ...
    python benchmarks/scripts/ablation_table.py --models benchmarks/runs/ablation

With ``--models`` it prints instead the ``--model SETTING-sSEED=RUN/best.pt`` arguments of
``femsr report`` for every run folder under the given one.
"""

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from femsr.evaluate import COMPONENTS, REGION_NAMES

IMAGE_MEASURES = ("ssim", "dice", "bvtv_error_percent", "mass_error_percent", "tbth_reconstruction")


def setting_of(label: str) -> str:
    """``base-s2`` -> ``base``."""
    name, _, seed = label.rpartition("-s")
    if not name or not seed.isdigit():
        raise SystemExit(f"model label {label!r} is not SETTING-sSEED")
    return name


def read(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def per_model(reports: list[Path]) -> dict[str, dict[str, float]]:
    """Each model's measures: one per ROI component, the worst femur, and the image means."""
    errors: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in (row for report in reports for row in read(report / "per_femur.csv")):
        key = f"{row['region']} {row['stiffness']}"
        errors[row["model"]][key].append(abs(float(row["error_percent"])))
    images: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in (row for report in reports for row in read(report / "per_femur_images.csv")):
        for name in IMAGE_MEASURES:
            value = float(row.get(name, "nan"))  # reports before the mass column: n/a
            images[row["model"]][name].append(abs(value) if "error" in name else value)
    measures = {}
    for model, by_key in errors.items():
        every = [e for values in by_key.values() for e in values]
        measures[model] = {
            **{key: finite_mean(values) for key, values in by_key.items()},
            "worst femur": max((e for e in every if math.isfinite(e)), default=math.nan),
            **{name: finite_mean(values) for name, values in images[model].items()},
        }
    return measures


def mean_sd(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return f"{statistics.fmean(finite):.3g} ± {sd:.2g}"


def table(reports: list[Path]) -> str:
    measures = per_model(reports)
    settings: dict[str, list[str]] = defaultdict(list)
    for model in measures:
        settings[setting_of(model)].append(model)
    stiffness = [(region, c) for region in REGION_NAMES for c in COMPONENTS]
    columns = [f"{REGION_NAMES[region]} {c}" for region, c in stiffness]
    columns += ["worst femur", *IMAGE_MEASURES]
    names = [f"{region} {c} %" for region, c in stiffness]
    names += ["worst femur %", "SSIM", "Dice", "BV/TV abs. error %", "mass abs. error %"]
    names += ["Tb.Th (mm)"]
    lines = [
        "| setting | seeds | " + " | ".join(names) + " |",
        "|" + " --- |" * (len(columns) + 2),
    ]
    for setting, models in settings.items():
        cells = [mean_sd([measures[m].get(c, math.nan) for m in models]) for c in columns]
        lines.append(f"| {setting} | {len(models)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_arguments(runs: Path) -> str:
    folders = sorted(p.parent for p in runs.glob("*/best.pt"))
    if not folders:
        raise SystemExit(f"no run folder with a best.pt under {runs}")
    return " ".join(f"--model {folder.name}={folder / 'best.pt'}" for folder in folders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders", type=Path, nargs="+", help="femsr report folders (the runs, with --models)"
    )
    parser.add_argument("--models", action="store_true", help="print femsr report's --model args")
    args = parser.parse_args()
    print(model_arguments(args.folders[0]) if args.models else table(args.folders))


if __name__ == "__main__":
    main()
