"""The table of docs/quantizers.md, from evaluate.py's JSON and the runs.

    python -m benchmarks.studies.quantizer_table EVALUATION.json

For each model of `evaluation.json` (a `RUN/model.keras` written by
`scripts/train.py`), one Markdown row: the yardstick's columns, the
validation PSNR of the run's last three epochs (min-max, from `metrics.csv`:
how much the final model's figure moves from epoch to epoch) and the training
throughput, 128 images over the median time per step of epochs 2 onwards as
Keras printed it in `RUN.log` (the run's output beside its directory).
"""

import argparse
import csv
import json
import os
import re
import statistics

from keras_dvq.utils import cli

BATCH_SIZE = 128
HEADER = (
    "| model | PSNR dB | SSIM | codes used | bits/token | bits/image "
    "| val PSNR, last 3 epochs | train images/s |\n"
    "|---|---|---|---|---|---|---|---|"
)


def last_epochs_psnr(run_dir, count=3):
    """The lowest and highest `val_psnr` of the run's last `count` epochs."""
    with open(os.path.join(run_dir, "metrics.csv")) as file:
        values = [float(row["val_psnr"]) for row in csv.DictReader(file)]
    return min(values[-count:]), max(values[-count:])


def train_images_per_second(run_dir):
    """`BATCH_SIZE` over the median ms/step Keras logged after epoch 1."""
    with open(run_dir.rstrip("/") + ".log") as file:
        times = [
            float(ms)
            for ms in re.findall(r"\d+/\d+ - \d+s - (\d+)ms/step", file.read())
        ]
    return BATCH_SIZE / (statistics.median(times[1:]) / 1000.0)


def table_row(row):
    """One Markdown row for a model of `evaluation.json`."""
    run_dir = os.path.dirname(row["model"])
    low, high = last_epochs_psnr(run_dir)
    used = f"{row['codes_used']} / {row['vocabulary_size']}"
    if "codes_used_per_stage" in row:
        used += " (per stage: " + ", ".join(map(str, row["codes_used_per_stage"]))
        used += ")"
    return (
        f"| {os.path.basename(run_dir)} | {row['psnr']:.2f} | {row['ssim']:.4f} "
        f"| {used} | {row['bits_per_token']:.2f} | {row['bits_per_image']:.0f} "
        f"| {low:.2f}-{high:.2f} | {train_images_per_second(run_dir):.0f} |"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evaluation", help="evaluation.json of scripts/evaluate.py")
    return parser.parse_args(argv)


def print_table(args):
    with open(args.evaluation) as file:
        results = json.load(file)
    print(HEADER)
    for row in results["models"]:
        print(table_row(row))


def main(argv=None):
    return cli.run("quantizer_table.py", parse_args, print_table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
