"""Train the shipped U-Net weights (models/unet_gd.pt); the same as ``lesioncount train``.

The shipped weights (see models/README.md for the run and its time):

    python scripts/train_unet.py --out models/unet_gd.pt --seed 0 --steps 2000 --workers 6

On a GPU (CUDA is used when present) this takes minutes; on 2 CPU cores, hours.
``scripts/train_unet_gpu.sh`` runs it with the two leave-one-patient-out models.
"""
from __future__ import annotations

import sys

from lesioncount.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
