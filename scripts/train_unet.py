"""Train the shipped U-Net weights (models/unet_gd.pt); same as ``lesioncount train``.

    OMP_NUM_THREADS=1 python scripts/train_unet.py --out models/unet_gd.pt --seed 0 --steps 500 --threads 1
"""
from __future__ import annotations

import argparse
import logging

from lesioncount.training import TrainOptions, train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/unet_gd.pt")
    ap.add_argument("--data", default=None, help="folder of <case>/{post,pre,label}.nii.gz (fine-tuning)")
    ap.add_argument("--init", default=None, help="weights to start from")
    ap.add_argument("--cache", default="/tmp/unet-data", help="phantom volume cache")
    ap.add_argument("--seed", type=int, default=TrainOptions.seed)
    ap.add_argument("--steps", type=int, default=TrainOptions.steps)
    ap.add_argument("--lr", type=float, default=TrainOptions.lr)
    ap.add_argument("--threads", type=int, default=TrainOptions.threads)
    ap.add_argument("--val-every", type=int, default=TrainOptions.val_every)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    opts = TrainOptions(seed=a.seed, steps=a.steps, lr=a.lr, threads=a.threads, val_every=a.val_every)
    train(a.out, data_dir=a.data, cache_dir=a.cache, init=a.init, options=opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
