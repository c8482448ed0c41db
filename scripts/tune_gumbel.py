"""Searches the Gumbel flavor's hyperparameters with keras-tuner.

    python scripts/tune_gumbel.py --dataset sample --max_trials 30 --out runs/tune

Every trial trains a fresh `--vq_flavor gumbel` model for `--max_steps` steps
and is scored as a tokenizer, not as a reconstruction: by its validation PSNR
(noise-free argmax codes, as a tokenizer encodes), less 10 dB for every bit
per token its codes carry under log2(150) = 7.23 bits (perplexity 150), so
that collapsing onto few codes cannot win (`tokenizer_score`).
Writes into --out: `search/` (keras-tuner's state; re-running the same command
continues the search where it stopped, and a re-run with other flags than
`--max_trials` is refused), `search_settings.json`, `trials.csv` (every trial's
hyperparameters, score, val_psnr, val_recon_loss, val_perplexity,
val_cluster_use and val_bits_per_token) and `best_hyperparameters.json`, which
`scripts/train.py --hparams` trains with.

`--report_only` writes the last two from the trials completed so far and
trains nothing: the way to read a search that was stopped before
`--max_trials` (stop it first; keras-tuner's state is not meant for two
processes at once).
"""

import argparse
import csv
import io
import json
import os
import sys

# Quiet TensorFlow's start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_dvq.training import builders  # noqa: E402
from keras_dvq.training import flags  # noqa: E402
from keras_dvq.training.builders import GUMBEL_DEFAULTS  # noqa: E402
from keras_dvq.training.builders import MODEL_FLAGS  # noqa: E402
from keras_dvq.training.config import DEFAULT_IMAGE_SIZE  # noqa: E402
from keras_dvq.training.config import check_image_size  # noqa: E402
from keras_dvq.training.gumbel_search import OBJECTIVE  # noqa: E402
from keras_dvq.training.gumbel_search import TUNERS  # noqa: E402
from keras_dvq.training.gumbel_search import USAGE_METRICS  # noqa: E402
from keras_dvq.training.gumbel_search import GumbelHyperModel  # noqa: E402
from keras_dvq.training.gumbel_search import make_tuner  # noqa: E402
from keras_dvq.training.gumbel_search import trial_rows  # noqa: E402
from keras_dvq.utils import atomic  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.errors import BadInput  # noqa: E402

# The flags a search is made with, kept in --out: a re-run continues the
# search only with the same ones (--max_trials may grow).
SETTINGS_FILE = "search_settings.json"
SEARCH_FLAGS = ("dataset", "max_steps", "tuner", "seed") + tuple(
    key for key in MODEL_FLAGS if key != "vq_flavor"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="tune_gumbel.py",
        description="keras-tuner search of the Gumbel flavor's hyperparameters.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    flags.add_model_flags(parser)
    add = parser.add_argument
    add("--out", required=True, help="output directory; re-runs continue its search")
    add("--tuner", choices=TUNERS, default="bayesian")
    add(
        "--max_trials",
        type=positive_int,
        default=30,
        help="trials in all, counting those of earlier runs (not hyperband)",
    )
    add("--max_steps", type=positive_int, default=400, help="training steps per trial")
    add(
        "--report_only",
        action="store_true",
        help="write trials.csv and best_hyperparameters.json of the trials "
        "completed so far; train nothing",
    )
    return parser.parse_args(argv)


def search_tuner(args, hypermodel, epochs):
    return make_tuner(
        args.tuner, hypermodel, args.out, args.max_trials, epochs, args.seed
    )


def check_search_flags(args):
    """Records the search's flags in --out, or checks a re-run's against them."""
    flags = {key: getattr(args, key) for key in SEARCH_FLAGS}
    path = os.path.join(args.out, SETTINGS_FILE)
    if not os.path.exists(path):
        os.makedirs(args.out, exist_ok=True)
        atomic.write_text(path, json.dumps(flags, indent=2) + "\n")
        return
    with open(path) as file:
        recorded = json.load(file)
    # Searches recorded before --image_size was a flag ran at 32 px.
    recorded = {"image_size": DEFAULT_IMAGE_SIZE, **recorded}
    for key, value in flags.items():
        if recorded.get(key) != value:
            raise BadInput(
                f"--out {args.out} holds a search made with --{key} "
                f"{recorded.get(key)}, not {value}; re-run it with the same flags "
                "(only --max_trials may change) or choose another --out."
            )


def tune(args):
    if args.report_only and not os.path.exists(os.path.join(args.out, SETTINGS_FILE)):
        raise BadInput(f"--out {args.out} holds no search to report on.")
    check_image_size(args.image_size, args.enc_dec_flavor, args.n_hid)
    check_search_flags(args)
    model_flags = {key: getattr(args, key) for key in MODEL_FLAGS if key != "vq_flavor"}
    model_kwargs = {k: v for k, v in model_flags.items() if k != "batch_size"}
    if args.report_only:
        # The tuner only reads its trials back: no data, no training.
        tuner = search_tuner(args, GumbelHyperModel(model_kwargs, 1, args.seed), 1)
        return report(args, tuner, model_flags)
    keras.utils.set_random_seed(args.seed)
    train_data, val_data = builders.load_splits(
        args.dataset,
        args.batch_size,
        data_dir=args.data_dir,
        seed=args.seed,
        image_size=args.image_size,
    )
    epochs, steps_per_epoch = builders.run_length(
        int(train_data.cardinality()), args.max_steps
    )
    hypermodel = GumbelHyperModel(model_kwargs, epochs * steps_per_epoch, args.seed)
    tuner = search_tuner(args, hypermodel, epochs)
    tuner.search(
        train_data.repeat(),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_data,
        shuffle=False,  # the pipeline shuffles
        verbose=2,
    )
    return report(args, tuner, model_flags)


def report(args, tuner, model_flags):
    """Writes trials.csv and best_hyperparameters.json; returns the latter."""
    rows = trial_rows(tuner)
    write_csv(os.path.join(args.out, "trials.csv"), rows)
    done = [row for row in rows if row[OBJECTIVE] != ""]
    if not done:
        raise BadInput(f"no trial of the search in {args.out} completed.")
    best = max(done, key=lambda row: row[OBJECTIVE])
    best_hparams = {"vq_flavor": "gumbel", **model_flags}
    best_hparams.update({key: best[key] for key in GUMBEL_DEFAULTS})
    text = json.dumps(best_hparams, indent=2) + "\n"
    atomic.write_text(os.path.join(args.out, "best_hyperparameters.json"), text)
    print(
        f"{len(done)} of {len(rows)} trials completed; best (trial {best['trial_id']}):"
    )
    for key in (OBJECTIVE, *USAGE_METRICS, *GUMBEL_DEFAULTS):
        print(f"  {key}: {best[key]}")
    print(f"wrote {args.out}: trials.csv, best_hyperparameters.json")
    return best_hparams


def write_csv(path, rows):
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, text.getvalue())


def main(argv=None):
    return cli.run("tune_gumbel.py", parse_args, tune, argv)


if __name__ == "__main__":
    sys.exit(main())
