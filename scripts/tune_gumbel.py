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
import math
import os
import sys

# Quiet TensorFlow's start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402

from keras_dvq.training import builders
from keras_dvq.training import flags  # noqa: E402
from keras_dvq.training.builders import GUMBEL_DEFAULTS  # noqa: E402
from keras_dvq.training.builders import MODEL_FLAGS  # noqa: E402
from keras_dvq.utils import atomic  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402

# The flags a search is made with, kept in --out: a re-run continues the
# search only with the same ones (--max_trials may grow).
SETTINGS_FILE = "search_settings.json"
SEARCH_FLAGS = ("dataset", "max_steps", "tuner", "seed") + tuple(
    key for key in MODEL_FLAGS if key != "vq_flavor"
)
OBJECTIVE = "val_tokenizer_score"
USAGE_METRICS = (
    "val_psnr",
    "val_recon_loss",
    "val_perplexity",
    "val_cluster_use",
    "val_bits_per_token",
)
# A tokenizer under this rate is penalized (perplexity 150, the usage the
# Gumbel flavor must reach), steeply: 10 dB of PSNR per missing bit.
MIN_BITS_PER_TOKEN = math.log2(150)
PENALTY_DB_PER_BIT = 10.0


def tokenizer_score(psnr, bits_per_token):
    """Validation PSNR less `PENALTY_DB_PER_BIT` for every bit per token
    under `MIN_BITS_PER_TOKEN`: higher is better."""
    shortfall = max(0.0, MIN_BITS_PER_TOKEN - bits_per_token)
    return psnr - PENALTY_DB_PER_BIT * shortfall


class TokenizerScore(keras.callbacks.Callback):
    """Adds `val_bits_per_token` (log2 of the whole split's perplexity) and
    `val_tokenizer_score` to the epoch logs, for keras-tuner to read; it must
    come before the tuner's own callbacks."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_psnr" not in logs:
            return
        bits = math.log2(max(float(logs["val_perplexity"]), 1.0))
        logs["val_bits_per_token"] = bits
        logs[OBJECTIVE] = tokenizer_score(float(logs["val_psnr"]), bits)


TUNERS = ("random", "bayesian", "hyperband")


class GumbelHyperModel(keras_tuner.HyperModel):
    """The search space of the Gumbel flavor's training recipe.

    `build` makes a fresh, compiled model per trial; `fit` adds fresh
    temperature-annealing and KL-ramp callbacks (they hold per-run state, so
    no two trials may share them) sized to the whole run of `total_steps`.
    The schedule lengths are searched as fractions of the run (see
    `keras_dvq.training.builders`), from a tenth of the run to ten runs long, which
    covers both schedules that finish inside a short trial and the original
    repo's, which barely start.

    Args:
        model_kwargs: dict. `VQVAE.from_flavors` arguments other than the
            quantizer's, e.g. `{"enc_dec_flavor": "deepmind", "n_hid": 64}`.
        total_steps: int. Steps of a full trial.
        seed: int. Seed of every trial's initial weights (the same for all,
            so that trials differ by their hyperparameters only).

    Example:

    ```python
    hypermodel = GumbelHyperModel({"n_hid": 64}, total_steps=400)
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=keras_tuner.Objective("val_tokenizer_score", "max"),
        max_trials=30, directory="runs/tune", project_name="search",
    )
    tuner.search(train_data, epochs=2, steps_per_epoch=200,
                 validation_data=val_data)
    ```
    """

    def __init__(self, model_kwargs, total_steps, seed=0):
        super().__init__(name="gumbel")
        self.model_kwargs = dict(model_kwargs)
        self.total_steps = total_steps
        self.seed = seed

    @staticmethod
    def hyperparameters(hp):
        """The search space; returns a dict shaped like `GUMBEL_DEFAULTS`."""
        log = {"sampling": "log"}
        return {
            # Wider than the first search where its winner sat on the edge
            # (learning rate, final temperature, anneal fraction).
            "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, **log),
            "temperature_start": hp.Float("temperature_start", 0.5, 2.0, **log),
            "temperature_end": hp.Float("temperature_end", 1 / 64, 1.0, **log),
            "temperature_anneal_fraction": hp.Float(
                "temperature_anneal_fraction", 0.02, 10.0, **log
            ),
            "kl_weight": hp.Float("kl_weight", 1e-6, 1e-2, **log),
            "kl_ramp_fraction": hp.Float("kl_ramp_fraction", 0.02, 5.0, **log),
            "diversity_weight": hp.Float("diversity_weight", 1e-4, 1e-1, **log),
            "balance_rate": hp.Float("balance_rate", 0.0, 0.05),
            "straight_through": hp.Boolean("straight_through"),
            "decoder_fraction": hp.Float("decoder_fraction", 0.0, 0.3),
            "decoder_learning_rate": hp.Float(
                "decoder_learning_rate", 3e-5, 3e-3, **log
            ),
        }

    def build(self, hp):
        hparams = self.hyperparameters(hp)
        keras.utils.set_random_seed(self.seed)
        return builders.build_model(
            learning_rate=builders.learning_rate_schedule(hparams, self.total_steps),
            vq_flavor="gumbel",
            **self.model_kwargs,
            **builders.gumbel_quantizer_kwargs(hparams),
        )

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        hparams = self.hyperparameters(hp)
        initial_epoch = kwargs.get("initial_epoch", 0)
        if initial_epoch:
            # Hyperband continues a trial from weights only: restore the step
            # count so that the schedules and the learning rate continue too.
            model.optimizer.iterations.assign(initial_epoch * kwargs["steps_per_epoch"])
        callbacks = [
            TokenizerScore(),  # first: the tuner's callbacks read its score
            *(callbacks or []),
            *builders.gumbel_callbacks(hparams, self.total_steps),
        ]
        return model.fit(*args, callbacks=callbacks, **kwargs)


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


def make_tuner(args, hypermodel, epochs):
    common = {
        "objective": keras_tuner.Objective(OBJECTIVE, "max"),
        "directory": args.out,
        "project_name": "search",
        "overwrite": False,  # the same --out continues the search
        "seed": args.seed,
    }
    if args.tuner == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=epochs, **common)
    if args.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel,
            max_trials=args.max_trials,
            # Random trials before the Gaussian process takes over.
            num_initial_points=max(2, args.max_trials // 3),
            **common,
        )
    return keras_tuner.RandomSearch(hypermodel, max_trials=args.max_trials, **common)


def check_search_flags(args):
    """Records the search's flags in --out, or checks a re-run's against them."""
    flags = {key: getattr(args, key) for key in SEARCH_FLAGS}
    path = os.path.join(args.out, SETTINGS_FILE)
    if not os.path.exists(path):
        os.makedirs(args.out, exist_ok=True)
        with open(path, "w") as file:
            json.dump(flags, file, indent=2)
        return
    with open(path) as file:
        recorded = json.load(file)
    for key, value in flags.items():
        if recorded.get(key) != value:
            raise ValueError(
                f"--out {args.out} holds a search made with --{key} "
                f"{recorded.get(key)}, not {value}; re-run it with the same flags "
                "(only --max_trials may change) or choose another --out."
            )


def tune(args):
    if args.report_only and not os.path.exists(os.path.join(args.out, SETTINGS_FILE)):
        raise ValueError(f"--out {args.out} holds no search to report on.")
    check_search_flags(args)
    model_flags = {key: getattr(args, key) for key in MODEL_FLAGS if key != "vq_flavor"}
    model_kwargs = {k: v for k, v in model_flags.items() if k != "batch_size"}
    if args.report_only:
        # The tuner only reads its trials back: no data, no training.
        tuner = make_tuner(args, GumbelHyperModel(model_kwargs, 1, args.seed), 1)
        return report(args, tuner, model_flags)
    keras.utils.set_random_seed(args.seed)
    train_data, val_data = builders.load_splits(
        args.dataset, args.batch_size, data_dir=args.data_dir, seed=args.seed
    )
    epochs, steps_per_epoch = builders.run_length(
        int(train_data.cardinality()), args.max_steps
    )
    hypermodel = GumbelHyperModel(model_kwargs, epochs * steps_per_epoch, args.seed)
    tuner = make_tuner(args, hypermodel, epochs)
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
        raise ValueError(f"no trial of the search in {args.out} completed.")
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


def trial_rows(tuner):
    """One dict per trial: id, status, hyperparameters and metrics ("" for
    metrics a failed or unfinished trial lacks)."""
    rows = []
    trials = tuner.oracle.trials
    for trial_id in sorted(trials, key=lambda name: (len(name), name)):
        trial = trials[trial_id]
        row = {"trial_id": trial_id, "status": trial.status}
        row.update(trial.hyperparameters.values)
        for name in (OBJECTIVE, *USAGE_METRICS):
            value = None
            if trial.metrics.exists(name):
                value = trial.metrics.get_last_value(name)
            row[name] = "" if value is None else value
        rows.append(row)
    return rows


def write_csv(path, rows):
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, text.getvalue())


def main(argv=None):
    args = parse_args(argv)
    try:
        tune(args)
    except ValueError as error:
        print(f"tune_gumbel.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
