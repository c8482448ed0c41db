"""The curves of docs/vqgan.md: runs with and without a discriminator, from
their `metrics.csv`.

    python -m benchmarks.studies.adversarial_figure RUN [RUN ...] --out PNG

Two panels over the epochs: each run's validation PSNR, and the
discriminator's mean logits on real (solid) and reconstructed (dashed)
training images for the runs that have one (`logits_real`,
`logits_fake`), with the epoch its weight first applies marked. A run is
named by its directory. A discriminator that wins drives the two logits
apart; one that collapses sends both to the same value.
"""

import argparse
import csv
import os

from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput


def read_run(directory):
    """`{"name", "epochs", "val_psnr", "logits_real", "logits_fake",
    "first_adversarial_epoch"}` of a run directory (logits `None` without a
    discriminator)."""
    path = os.path.join(directory, "metrics.csv")
    try:
        with open(path) as file:
            rows = list(csv.DictReader(file))
    except OSError:
        raise BadInput(f"{directory}: no metrics.csv (not a train.py run)") from None
    if not rows or "val_psnr" not in rows[0]:
        raise BadInput(f"{path}: no epochs with val_psnr")
    run = {
        "name": os.path.basename(os.path.normpath(directory)),
        "epochs": [int(row["epoch"]) + 1 for row in rows],
        "val_psnr": [float(row["val_psnr"]) for row in rows],
        "logits_real": None,
        "logits_fake": None,
        "first_adversarial_epoch": None,
    }
    if "logits_real" in rows[0]:
        run["logits_real"] = [float(row["logits_real"]) for row in rows]
        run["logits_fake"] = [float(row["logits_fake"]) for row in rows]
        weighted = [
            epoch
            for epoch, row in zip(run["epochs"], rows, strict=True)
            if float(row["adv_weight"]) > 0
        ]
        run["first_adversarial_epoch"] = weighted[0] if weighted else None
    return run


def figure_of(runs):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=100)
    psnr_axes, logit_axes = figure.subplots(1, 2)
    colours = [f"C{index}" for index in range(10)]
    for colour, run in zip(colours * 10, runs, strict=False):
        psnr_axes.plot(run["epochs"], run["val_psnr"], color=colour, label=run["name"])
        if run["logits_real"] is None:
            continue
        logit_axes.plot(
            run["epochs"], run["logits_real"], color=colour, label=f"{run['name']} real"
        )
        logit_axes.plot(
            run["epochs"],
            run["logits_fake"],
            color=colour,
            linestyle="--",
            label=f"{run['name']} reconstructed",
        )
        if run["first_adversarial_epoch"] is not None:
            logit_axes.axvline(
                run["first_adversarial_epoch"], color=colour, alpha=0.3, linewidth=1
            )
    psnr_axes.set_title("validation PSNR (dB)", fontsize=10)
    logit_axes.set_title("discriminator's mean logits (training)", fontsize=10)
    for axes in (psnr_axes, logit_axes):
        axes.set_xlabel("epoch")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def run_study(args):
    from keras_dvq.evaluation.plots import save_figure

    runs = [read_run(directory) for directory in args.runs]
    save_figure(figure_of(runs), args.out)
    print(f"wrote {args.out}: {len(runs)} runs")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="train.py run directories")
    parser.add_argument("--out", required=True, help="the PNG to write")
    return parser.parse_args(argv)


def main(argv=None):
    return cli.run("adversarial_figure", parse_args, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
