"""``femsr demo``: the bundled model on the bundled held-out femur, end to end.

The package carries one held-out test femur (``femsr/data/femur.npz``: the 50 µm reference
density with its pixel size, geometry and load cases; the 500 µm input is its block mean) and
the trained network (``femsr/data/model.pt``). :func:`demo` downscales the femur, reconstructs
it with :func:`femsr.reconstruct` (LR FE, inference, seam quilting), reconstructs it again
without quilting (straight cuts) for the paper's comparison, and writes the HR image, the
figures and the ROI stiffness table (:func:`femsr.evaluate.write_report`), timing each stage.
``femsr/data/README.md`` says how both files were made and which command remakes them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from femsr import dataset, evaluate, io
from femsr.reconstruct import reconstruct

__all__ = ["BUNDLED_FEMUR", "demo"]

logger = logging.getLogger(__name__)

BUNDLED_FEMUR = Path(__file__).parent / "data" / "femur.npz"


def demo(
    out_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    femur_file: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tta: bool = False,
    crisp: bool = False,
    refine: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Reconstruct a held-out femur from its 500 µm image and score it; returns the timings.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing). It gets ``input_lr.png`` (the 500 µm input),
        ``reconstruction.npz`` (femur file, 16-bit) and ``reconstruction.png``,
        ``without_quilting.png``, the report of :func:`femsr.evaluate.write_report`
        (``table.md``, ``table.csv``, ``images.csv``, ``rois.png``, ``femur.png``,
        ``femur_reconstruction.png``) and ``timings.json``.
    model : path, optional
        An exported model; default the bundled one.
    femur_file : path, optional
        A femur file (:func:`femsr.io.save_femur`) with the HR reference; default the bundled
        femur.
    device : str
        ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``...
    tta : bool
        Test-time dihedral averaging of both reconstructions (:func:`femsr.reconstruct`):
        eight times the inference.
    crisp : bool
        Redraw both reconstructions crisp at the bone mass of every LR pixel
        (:func:`femsr.crisp.draw_struts`).
    refine : int
        Refine both by that many iterations of topology optimization at the LR pixels' bone
        masses, then redraw them crisp (:func:`femsr.reconstruct` ``refine``): minutes each.
    progress : bool
        Show a tqdm bar of the reconstruction on stderr. Each stage and its seconds are
        logged (INFO, logger ``femsr.demo``) whatever ``progress``.

    Returns
    -------
    dict
        Seconds per stage (``load``, ``reconstruct`` with its ``lr_fe``/``inference``/
        ``quilting``/``refine``/``redraw`` split, ``without_quilting``, ``evaluate``,
        ``total``), the device, ``tta``, ``crisp`` (whether redrawn) and ``refine_iterations``.

    Raises
    ------
    FileNotFoundError, ValueError
        If the femur or the model file is missing or not what it should be.
    """
    out = Path(out_dir)
    source = BUNDLED_FEMUR if femur_file is None else Path(femur_file)
    if not source.is_file():
        raise FileNotFoundError(
            f"femur file {str(source)!r} does not exist"
            + (" (the bundled femur is not installed)" if femur_file is None else "")
        )
    timings: dict[str, Any] = {}
    started = time.perf_counter()

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        logger.info("demo: %s %.2f s", name.replace("_", " "), timings[name])
        return now

    reference = io.load_femur(source)
    lr = dataset.downscale_femur(reference)
    shape = reference.density.shape
    logger.info(
        "demo: %s: %dx%d px at %s mm, input %dx%d at %g mm",
        source.name,
        *shape,
        reference.pixel_size,
        *lr.density.shape,
        lr.pixel_size,
    )
    io.write_image(out / "input_lr.png", lr.density, bits=8)
    now = stage("load", started)

    stats: dict[str, Any] = {}
    options: dict[str, Any] = {
        "model": model,
        "device": device,
        "tta": tta,
        "crisp": crisp,
        "refine": refine,
    }
    hr = reconstruct(lr, progress=progress, stats=stats, **options)[: shape[0], : shape[1]]
    now = stage("reconstruct", now)
    stages = ("lr_fe", "inference", "quilting", "refine", "redraw")
    timings.update({key: stats[key] for key in stages})
    timings["device"] = str(stats["device"])
    timings["tta"] = tta
    timings["crisp"] = stats["crisp"]
    timings["refine_iterations"] = refine
    io.save_femur(
        out / "reconstruction.npz",
        io.FemurImage(hr, reference.pixel_size, reference.femur, {"source": source.name}),
    )
    io.write_image(out / "reconstruction.png", hr)
    cut = reconstruct(lr, method="cut", **options)[: shape[0], : shape[1]]
    io.write_image(out / "without_quilting.png", cut)
    now = stage("without_quilting", now)

    evaluate.write_report(
        out,
        reference,
        hr,
        without_quilting=cut,
        names=(f"{source.name} (reference)", "femsr reconstruction"),
    )
    stage("evaluate", now)
    timings["total"] = time.perf_counter() - started
    with io.atomic_write(out / "timings.json", "w") as stream:
        json.dump(timings, stream, indent=1)
    return timings
