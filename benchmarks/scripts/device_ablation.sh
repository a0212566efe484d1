#!/usr/bin/env bash
# The training-terms ablation on a machine with one NVIDIA GPU (its image has torch,
# CUDA, scikit-build-core, pybind11, scipy; pyamg travels as a wheel in .whl/, as for
# device_check.sh):
#
#   device: bash benchmarks/scripts/device_ablation.sh [EPOCHS]      (carry .whl; about 9 min)
#   here:   tar xf ablation_reports.tar && python benchmarks/scripts/ablation_table.py reports/*/
#
# Builds femsr there, cuts the grown femurs of benchmarks/femurs into patches (stride 4), and
# trains four settings with three seeds each, all twelve side by side on the one GPU (one CPU
# thread each, at most TRAIN_SECONDS; the reports at most REPORT_SECONDS): L1 + mass (base), base + clDice, base + stiffness, base at
# twice the width. Then `femsr report` scores the twelve best.pt on the validation femurs, and
# the per-femur tables come back in ablation_reports.tar, the runs' best.pt and logs in
# ablation_runs*.tar (at most 8 files, 16 MiB each, come back).
# DEVICE=cpu and BUILD=0 run it on a machine without CUDA where femsr is installed; TRAIN_ARGS
# adds femsr train arguments (e.g. "--pairs 64 --val-pairs 32" for a quick check); STRIDE sets
# the dataset's window offset (4; 1 gives the paper's order of pairs, about 20,000 a femur);
# SETTINGS and SEEDS choose some of the runs (all four settings; seeds 0 1 2).
set -uo pipefail
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=16
epochs=${1:-20}
device=${DEVICE:-cuda}
femurs=${FEMURS:-benchmarks/femurs}
work=${WORK:-/tmp/ablation}
if [ "${BUILD:-1}" = 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    -Cbuild-dir=/tmp/build -e . > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
started=$(date +%s)
femsr dataset "$femurs" "$work/patches" --stride "${STRIDE:-4}" --quiet || exit 1
echo "dataset: $(($(date +%s) - started)) s"
declare -A settings=(
  [base]="--loss l1 --mass-weight 1"
  [cldice]="--loss l1 --mass-weight 1 --cldice-weight 0.2"
  [stiffness]="--loss l1 --mass-weight 1 --stiffness-weight 0.1"
  [wide]="--loss l1 --mass-weight 1 --width 64 --up-width 16"
)
started=$(date +%s)
for name in ${SETTINGS:-${!settings[@]}}; do
  for seed in ${SEEDS:-0 1 2}; do
    run=$name-s$seed
    # shellcheck disable=SC2086  # the settings are word lists
    (timeout "${TRAIN_SECONDS:-300}" femsr train "$work/patches" "$work/runs/$run" \
      ${settings[$name]} --seed "$seed" --epochs "$epochs" --val-pairs 1000 --threads 1 \
      --device "$device" ${TRAIN_ARGS:-} --quiet > "$work/$run.txt" 2>&1 \
      || { echo "$run stopped:"; tail -3 "$work/$run.txt"; }) &
  done
done
wait
echo "training: $(($(date +%s) - started)) s for 12 runs side by side"
for run in "$work"/runs/*/; do
  echo "$(basename "$run"): $(wc -l < "$run/train_log.jsonl") epochs, $(tail -1 "$work/$(basename "$run").txt")"
done
# The runs first, so they come back even if the reports run out of time.
# Apart, the wide runs: each archive that comes back holds at most 16 MiB.
narrow=() wide=()
for run in "$work"/runs/*/; do
  run=$(basename "$run")
  case $run in wide-*) wide+=("$run") ;; *) narrow+=("$run") ;; esac
done
[ ${#narrow[@]} -gt 0 ] && tar cf "$OUT/ablation_runs.tar" -C "$work/runs" --exclude checkpoint.pt \
  "${narrow[@]}"
[ ${#wide[@]} -gt 0 ] && tar cf "$OUT/ablation_runs_wide.tar" -C "$work/runs" --exclude checkpoint.pt \
  "${wide[@]}"
# One report process per femur and three models (16 side by side, one thread each): each
# measures its reference once, then its models' reconstructions.
read -ra models <<< "$(python3 benchmarks/scripts/ablation_table.py --models "$work/runs")"
mkdir -p "$work/reports"
started=$(date +%s)
validation=$(python3 -c "import json, sys; print(' '.join(e['name'] for e in json.load(open(sys.argv[1]))['femurs'] if e['split'] == 'validation'))" "$femurs/manifest.json")
for name in $validation; do
  [ -f "$femurs/$name.npz" ] || continue
  for ((first = 0; first < ${#models[@]}; first += 6)); do
    part=$work/reports/${name}_$first
    (OMP_NUM_THREADS=1 timeout "${REPORT_SECONDS:-600}" femsr report "$femurs" \
      "${models[@]:first:6}" --only "$name" --device "$device" --output "$part" --quiet \
      > "$part.txt" 2>&1 || tail -3 "$part.txt") &
  done
done
wait
echo "report: $(($(date +%s) - started)) s"
tar cf "$OUT/ablation_reports.tar" -C "$work" --exclude '*.png' reports
ls -la "$OUT"
