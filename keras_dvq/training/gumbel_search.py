"""The keras-tuner search of the Gumbel flavor's training recipe.

`GumbelHyperModel` is the search space (every hyperparameter of
`builders.GUMBEL_DEFAULTS`); each trial is scored as a tokenizer, not as a
reconstruction: by its validation PSNR (noise-free argmax codes, as a
tokenizer encodes), less 10 dB for every bit per token its codes carry under
log2(150) = 7.23 bits (perplexity 150), so that collapsing onto few codes
cannot win (`tokenizer_score`). `scripts/tune_gumbel.py` runs it.
"""

import math

import keras
import keras_tuner

from keras_dvq.training import builders

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


def make_tuner(kind, hypermodel, directory, max_trials, epochs, seed):
    """A keras-tuner tuner of `kind` (one of `TUNERS`) over `hypermodel` that
    maximizes `OBJECTIVE` and keeps its state in `directory/search` (the same
    directory continues the search)."""
    common = {
        "objective": keras_tuner.Objective(OBJECTIVE, "max"),
        "directory": directory,
        "project_name": "search",
        "overwrite": False,  # the same directory continues the search
        "seed": seed,
    }
    if kind == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=epochs, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel,
            max_trials=max_trials,
            # Random trials before the Gaussian process takes over.
            num_initial_points=max(2, max_trials // 3),
            **common,
        )
    return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)


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
