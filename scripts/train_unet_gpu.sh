#!/usr/bin/env bash
# The shipped U-Net, trained on one GPU machine (its CPU cores draw the patches; see
# models/README.md for the measured run).
#
#   bash scripts/train_unet_gpu.sh OUTDIR [STEPS]
#
# Writes OUTDIR/unet_gd.pt (the shipped weights) with its .log.json, and OUTDIR/train.log.
# MODELS="unet_gd unet_no07 unet_no19" also trains, side by side, the same run without one
# real patient each (to count false positives on a patient the model never saw); the patch
# workers are then shared between the runs.
# PYTHON picks the interpreter; UNET_CACHE the volume cache (default /tmp/unet-data);
# any further arguments go to every `lesioncount train` (e.g. --templates 8).
set -uo pipefail
out=${1:?usage: train_unet_gpu.sh OUTDIR [STEPS] [train options]}
steps=${2:-6000}
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
echo "$(date -u +%FT%TZ) $ncpu cores, models: $models, $workers patch workers each, $steps steps, extra: $*" | tee -a "$log"
run() {  # name, extra args
  local name=$1; shift
  "$py" -m lesioncount.cli train --out "$out/$name.pt" --cache "$cache" --seed 0 --steps "$steps" \
    --workers "$workers" "$@" 2>&1 | sed "s/^/[$name] /" >> "$log"
}
# the volumes of every run, generated once on all cores (the first run then finds them)
"$py" -c "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(asctime)s %(message)s')
from lesioncount.cli import build_parser
from lesioncount.training import TrainOptions, phantom_volumes
a = build_parser().parse_args(['train', *sys.argv[1:]])
phantom_volumes('$cache', 0, templates=a.templates, patient_repeats=a.patient_repeats, workers=$ncpu)" "$@" \
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
