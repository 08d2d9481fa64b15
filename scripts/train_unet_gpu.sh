#!/usr/bin/env bash
# The shipped U-Net, trained on one GPU machine (its CPU cores draw the patches; see
# models/README.md for the measured run).
#
#   bash scripts/train_unet_gpu.sh OUTDIR [STEPS] [train options]
#
# Stage 1: STEPS (default 5000) steps from scratch at the default learning rate (3e-3).
# Stage 2: STAGE2_STEPS (default 4000; 0 = none) more steps from stage 1's best weights at
# STAGE2_LR (default 1e-3), a second one-cycle schedule: the validation F1 was still rising
# when stage 1's learning rate had annealed (0.877 at step 4750 of 5000; 0.913 after stage 2).
# Writes OUTDIR/stage1/unet_gd.pt and OUTDIR/unet_gd.pt (the shipped weights), each with its
# .log.json, and OUTDIR/train.log. The shipped models/unet_gd.pt is this script's default run
# (it was run as its two stages in two calls: `... OUT 5000 --val-every 250`, then
# `... OUT2 4000 --val-every 250 --init OUT/unet_gd.pt --lr 1e-3` with STAGE2_STEPS=0).
# MODELS="unet_gd unet_no07 unet_no19" also trains, side by side, the same run without one
# real patient each (to count false positives on a patient the model never saw); the patch
# workers are then shared between the runs.
# PYTHON picks the interpreter; UNET_CACHE the volume cache (default /tmp/unet-data);
# further arguments go to every `lesioncount train` of both stages.
set -uo pipefail
out=${1:?usage: train_unet_gpu.sh OUTDIR [STEPS] [train options]}
steps=${2:-5000}
stage2=${STAGE2_STEPS:-4000}
stage2_lr=${STAGE2_LR:-1e-3}
shift; shift || true
py=${PYTHON:-python3}
cache=${UNET_CACHE:-/tmp/unet-data}
models=${MODELS:-unet_gd}
n=$(echo $models | wc -w)
ncpu=$(nproc)
workers=$(( (ncpu - 1) / n > 0 ? (ncpu - 1) / n : 1 ))
# OMP 1: the patch workers are processes; cuBLAS workspace: deterministic GEMMs on CUDA
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
mkdir -p "$out"
log="$out/train.log"
t0=$(date +%s)
echo "$(date -u +%FT%TZ) $ncpu cores, models: $models, $workers patch workers each, $steps + $stage2 steps, extra: $*" | tee -a "$log"
run() {  # name, extra args: stage 1 into OUTDIR/stage1, then stage 2 into OUTDIR
  local name=$1; shift
  local first="$out/$name.pt"
  if [ "$stage2" -gt 0 ]; then mkdir -p "$out/stage1"; first="$out/stage1/$name.pt"; fi
  "$py" -m lesioncount.cli train --out "$first" --cache "$cache" --seed 0 --steps "$steps" \
    --workers "$workers" "$@" 2>&1 | sed "s/^/[$name] /" >> "$log"
  if [ "$stage2" -gt 0 ]; then
    "$py" -m lesioncount.cli train --out "$out/$name.pt" --cache "$cache" --seed 0 --steps "$stage2" \
      --workers "$workers" --init "$first" --lr "$stage2_lr" "$@" 2>&1 | sed "s/^/[$name stage 2] /" >> "$log"
  fi
}
# the volumes of every run, generated once on all cores (the first run then finds them)
"$py" -c "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(asctime)s %(message)s')
from lesioncount.cli import build_parser
from lesioncount.training import TrainOptions, phantom_volumes
a = build_parser().parse_args(['train', *sys.argv[1:]])
phantom_volumes('$cache', 0, templates=a.templates, patient_repeats=a.patient_repeats, workers=$ncpu, template_chronic=a.template_chronic)" "$@" \
  2>&1 | sed 's/^/[volumes] /' | tee -a "$log"
echo "volumes ready after $(( $(date +%s) - t0 )) s" | tee -a "$log"
for m in $models; do
  case $m in
    unet_no07) run "$m" --exclude patient07 "$@" & ;;
    unet_no19) run "$m" --exclude patient19 "$@" & ;;
    *) run "$m" "$@" & ;;
  esac
done
wait
echo "trained after $(( $(date +%s) - t0 )) s" | tee -a "$log"
grep -h "validation\|saved\|Error\|error" "$log" | tail -30
