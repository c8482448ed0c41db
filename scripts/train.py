"""Trains a VQ-VAE with `model.fit` and writes everything a run leaves behind.

    python scripts/train.py --dataset sample --out runs/demo

Writes into --out: `model.keras` (final), `best.keras` (lowest
val_recon_loss), `metrics.csv`, `training_curves.png` (loss terms, PSNR,
perplexity and codes used against steps), `reconstructions.png` (validation
originals above their reconstructions), `codebook_usage.png`, `tensorboard/`
logs, `run_config.json` and, while running, `run.lock` and `backup/` (removed
on success) from which `--resume` continues an interrupted run, mid-epoch too.
The run itself is `keras_dvq.training.train_tokenizer`; this script parses
its flags (`keras_dvq.training.flags`).

Exit codes: 0 done, 2 bad input (one line on stderr), 3 training diverged
(non-finite loss or weights; nothing non-finite was written). See
docs/robustness.md.
"""

import os
import sys

# Quiet TensorFlow's start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dvq.training import flags  # noqa: E402
from keras_dvq.training.run import divergence_advice  # noqa: E402
from keras_dvq.training.run import train_tokenizer  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.divergence import TrainingDiverged  # noqa: E402

EXIT_DIVERGED = 3  # distinct from 2 (bad input): retrying may help


def main(argv=None):
    return cli.run(
        "train.py",
        flags.parse_train_config,
        train_tokenizer,
        argv,
        outcomes={TrainingDiverged: (EXIT_DIVERGED, divergence_advice)},
    )


if __name__ == "__main__":
    sys.exit(main())
