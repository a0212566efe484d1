#!/usr/bin/env bash
# The GPU checks on a machine with one NVIDIA GPU (its image has torch, CUDA, scikit-build-core,
# pybind11, scipy; not pyamg, which travels as a wheel in .whl/, an ignored folder):
#
#   here:   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#             --implementation cp --platform manylinux_2_28_x86_64 -d .whl pyamg
#   device: bash benchmarks/scripts/device_check.sh [train]     (carry .whl; about 3 min, 6 with train)
#
# Builds femsr there, runs the CUDA-relevant tests, times reconstruct() on the full-size femur
# and the bundled demo; with "train", trains the four settings of benchmarks/scripts/reproduce.sh for
# 64 epochs side by side and leaves each run's best.pt and log under $OUT (at most 8 files come
# back). Figures: benchmarks/RESULTS.md, "On a GPU".
set -uo pipefail
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=16
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
  -Cbuild-dir=/tmp/build -e . > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging tests/test_model.py \
  tests/test_export.py tests/test_reconstruct.py tests/test_quilt.py 2>&1 | tail -6
timeout 100 python3 benchmarks/scripts/reconstruct_fullsize.py --repeat 7 --device cuda --batch-size 344
timeout 100 femsr demo /tmp/demo --quiet | tail -2
if [ "${1:-}" = train ]; then
  femsr dataset benchmarks/femurs /tmp/patches --stride 4 --quiet || exit 1
  for run in l1 l2 l1_mass l2_mass; do
    mass=0; [[ $run == *_mass ]] && mass=1
    (timeout 330 femsr train /tmp/patches "/tmp/runs/$run" --loss "${run%_mass}" \
      --mass-weight "$mass" --epochs 64 --threads 3 --device cuda --quiet > "/tmp/$run.txt" 2>&1 \
      || tail -5 "/tmp/$run.txt"
     mkdir -p "$OUT/$run" && cp "/tmp/runs/$run/best.pt" "/tmp/runs/$run/train_log.jsonl" "$OUT/$run/") &
  done
  wait
fi
