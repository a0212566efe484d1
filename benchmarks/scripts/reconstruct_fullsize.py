"""Time ``femsr.reconstruct`` on one full-size femur (208 x 189 LR → 2080 x 1890 HR).

Run with the peak memory measured from outside::

    /usr/bin/time -v python benchmarks/scripts/reconstruct_fullsize.py [--repeat 3] [--device cpu]
        [--batch-size 64] [--dtype bfloat16]

The LR image is the mean phantom's mask (0.5 mm) filled with a synthetic gray density (smoothed
noise, 0.1-0.9); the network is the default :class:`femsr.model.ModelConfig`, untrained (the
cost does not depend on the weights), exported to ``.pt2``. Prints, per model kind (the
exported file loaded once, the eager network), the median seconds of the whole call and of
its stages: LR FE, inference, quilting (and, for the file, the load).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import femsr
from femsr.export import export_model, load_model
from femsr.femur import LR_PIXEL, Femur
from femsr.model import ModelConfig, build_model


def synthetic_lr(seed: int = 0) -> np.ndarray:
    mask = Femur().mask(LR_PIXEL)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(mask.shape), 3.0)
    gray = 0.5 + 0.4 * np.tanh(noise / noise.std())
    return np.where(mask, gray, 0.0)


def run(label: str, lr: np.ndarray, model: object, args: argparse.Namespace) -> None:
    keys = ("total", "model", "lr_fe", "inference", "quilting")
    runs = []
    for _ in range(args.repeat):
        stats: dict[str, object] = {}
        femsr.reconstruct(
            lr,
            femur=Femur(),
            pixel_size=LR_PIXEL,
            model=model,
            device=args.device,
            batch_size=args.batch_size,
            method=args.method,
            dtype=args.dtype,
            stats=stats,
        )
        runs.append(stats)
    median = {key: statistics.median(float(s[key]) for s in runs) for key in keys}  # type: ignore[arg-type]
    first = runs[0]
    print(
        f"{label:<22} total {median['total']:6.2f} s | load {median['model']:5.2f} | LR FE "
        f"{median['lr_fe']:5.2f} ({first['fe_method']}) | inference {median['inference']:5.2f} "
        f"({first['inferred']}/{first['windows']} windows, {first['device']}) | quilting "
        f"{median['quilting']:5.2f} | first run {float(first['total']):.2f} s"  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", default="seam", choices=("seam", "average", "cut"))
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), help="autocast (CUDA)")
    args = parser.parse_args()

    lr = synthetic_lr()
    threads = torch.get_num_threads()
    print(f"LR {lr.shape[0]}x{lr.shape[1]}, torch {torch.__version__}, {threads} threads")
    torch.manual_seed(0)
    net = build_model(ModelConfig()).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = export_model(net, Path(folder) / "model.pt2")
        run("exported .pt2 (path)", lr, path, args)
        run("exported .pt2 (loaded)", lr, load_model(path, device=args.device), args)
        run("eager SRNet", lr, net, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
