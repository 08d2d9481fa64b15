#!/usr/bin/env bash
# The shipped U-Net and its two leave-one-patient-out checks, trained side by side on one
# GPU machine (16 CPU cores draw the patches; see models/README.md for the measured run).
#
#   bash scripts/train_unet_gpu.sh OUTDIR [STEPS]
#
# Writes OUTDIR/unet_gd.pt (all training data: the shipped weights), OUTDIR/unet_no07.pt and
# OUTDIR/unet_no19.pt (the same run without one real patient, to count false positives on a
# patient the model never saw), each with its .log.json, and OUTDIR/train.log.
# PYTHON picks the interpreter; UNET_CACHE the volume cache (default /tmp/unet-data).
set -uo pipefail
out=${1:?usage: train_unet_gpu.sh OUTDIR [STEPS]}
steps=${2:-3000}
py=${PYTHON:-python3}
cache=${UNET_CACHE:-/tmp/unet-data}
ncpu=$(nproc)
workers=$(( (ncpu - 1) / 3 > 0 ? (ncpu - 1) / 3 : 1 ))
# OMP 1: the patch workers are processes; cuBLAS workspace: deterministic GEMMs on CUDA
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
mkdir -p "$out"
log="$out/train.log"
t0=$(date +%s)
echo "$(date -u +%FT%TZ) $ncpu cores, $workers patch workers per run, $steps steps" | tee -a "$log"
"$py" -c "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(asctime)s %(message)s')
from lesioncount.training import phantom_volumes
phantom_volumes('$cache', 0, workers=$ncpu)" 2>&1 | sed 's/^/[volumes] /' | tee -a "$log"
echo "volumes ready after $(( $(date +%s) - t0 )) s" | tee -a "$log"
run() {  # name, extra args
  local name=$1; shift
  "$py" -m lesioncount.cli train --out "$out/$name.pt" --cache "$cache" --seed 0 --steps "$steps" \
    --workers "$workers" "$@" 2>&1 | sed "s/^/[$name] /" >> "$log"
}
run unet_gd &
run unet_no07 --exclude patient07 &
run unet_no19 --exclude patient19 &
wait
echo "trained after $(( $(date +%s) - t0 )) s" | tee -a "$log"
grep -h "validation\|saved\|Error\|error" "$log" | tail -20
