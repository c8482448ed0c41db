"""`train_tokenizer`: one training run of a tokenizer, from its settings to its files.

It writes into the run's directory: `model.keras` (final), `best.keras`
(lowest val_recon_loss), `metrics.csv`, `training_curves.png`,
`reconstructions.png`, `codebook_usage.png`, `tensorboard/`,
`run_config.json` and, while running, `run.lock` and `backup/`, from which a
run with `resume=True` continues after a kill, mid-epoch too. The backup goes
only once `model.keras` is written, and `run_config.json` only once the data
has loaded and the model is built: a run that fails early leaves the
directory's earlier record as it was.
"""

import contextlib
import json
import os
import sys

import keras
import numpy as np

from keras_dvq import distribution
from keras_dvq.callbacks import BestCheckpoint
from keras_dvq.callbacks import KMeansInit
from keras_dvq.callbacks import MetricsLogger
from keras_dvq.callbacks import ReconstructionLogger
from keras_dvq.callbacks import StepBackup
from keras_dvq.callbacks import StopOnDivergence
from keras_dvq.callbacks import TrainingCurves
from keras_dvq.data.datasets import images_of
from keras_dvq.models.flavors import QUANTIZERS
from keras_dvq.training import builders
from keras_dvq.training.config import MAY_CHANGE_ON_RESUME
from keras_dvq.training.config import SIZED_BY_EMBEDDINGS
from keras_dvq.training.config import current_flavor_names
from keras_dvq.training.resumable import fit_resumable
from keras_dvq.utils import run_directory
from keras_dvq.utils.atomic import remove_temporaries
from keras_dvq.utils.divergence import save_finite_model
from keras_dvq.utils.errors import BadInput

# Encoder outputs KMeansInit clusters: 20,000 (the original repo's), or 4 a
# code for large codebooks (65,536 for 16,384 codes).
KMEANS_LATENTS = 20_000
KMEANS_LATENTS_PER_CODE = 4
# The usage chart counts codes on this many latent positions of validation
# images (1,024 images at 32 px and stride 4): held in memory for the whole
# run, so a 256-px run keeps 256 images, not 1,024 (805 MB in float32).
LOGGED_POSITIONS = 65_536
MIN_LOGGED_IMAGES = 16  # the reconstruction grid's
MAX_SCANNED_BATCHES = 64  # the logged images are spread over these
DEVICE_TYPE = "GPU"  # what `gpus` counts (tests count logical CPU devices)
OUTPUTS = (
    "model.keras, best.keras, metrics.csv, training_curves.png, "
    "reconstructions.png, codebook_usage.png, tensorboard/"
)


def train_tokenizer(config, callbacks=()):
    """Trains the tokenizer `config` describes and writes its run directory.

    Args:
        config: a `TrainingConfig`.
        callbacks: more Keras callbacks, run after the run's own (a timer, a
            logger); the step backup stays last.

    Returns:
        The final model's validation logs, a dict (`recon_loss`, `psnr`,
        `perplexity`, `cluster_use`, ...).

    Raises:
        BadInput: settings, data or run directory that cannot be used (a
            flag of another flavor, an image size the encoder's stride does
            not divide, `resume` without a backup, a directory
            in use or holding an interrupted run); nothing is written.
        TrainingDiverged: a non-finite loss or weight; nothing non-finite
            was written and the last backup is kept.

    Example:

    ```python
    config = TrainingConfig(out="runs/demo", dataset="sample", max_steps=300)
    logs = train_tokenizer(config)
    ```
    """
    # Settings of another flavor fail before anything is written.
    config.recipe_hparams()
    config.quantizer_options()
    config.check_image_size()
    config.adversarial_options()
    config.perceptual_weight_files()
    with run_directory.RunLock(config.out):
        remove_temporaries(config.out)
        remove_temporaries(os.path.join(config.out, "backup"))
        return _train(config, list(callbacks))


def _train(config, extra_callbacks):
    backup_dir = os.path.join(config.out, "backup")
    if os.path.isdir(backup_dir) and not config.resume:
        raise BadInput(
            f"--out {config.out} holds an interrupted run ({backup_dir}); pass "
            "--resume to continue it or choose another --out."
        )
    if config.resume and not os.path.isdir(backup_dir):
        raise BadInput(f"--resume: no interrupted run to continue in {config.out}.")
    hparams = config.recipe_hparams()
    record = config.run_record()
    changed = run_directory.compare_run_config(
        config.out,
        record,
        config.resume,
        MAY_CHANGE_ON_RESUME,
        normalize=current_flavor_names,
    )
    for key, (old, new) in changed.items():
        print(f"resuming with --{key} {new} (was {old})")
    keras.utils.set_random_seed(config.seed)
    # A resumed run reshuffles from another seed: it should not replay the
    # batches that the interrupted one began with.
    state = StepBackup.read_state(backup_dir) if config.resume else None
    data_seed = config.seed + (state["step"] if state else 0)

    train_data, val_data = builders.load_splits(
        config.dataset,
        config.batch_size,
        data_dir=config.data_dir,
        seed=data_seed,
        image_size=config.image_size,
        shuffle_buffer=config.shuffle_buffer,
    )
    batches_per_pass = int(train_data.cardinality())
    if config.epochs:
        epochs, steps_per_epoch = config.epochs, batches_per_pass
    else:
        epochs, steps_per_epoch = builders.run_length(
            batches_per_pass, config.max_steps
        )
    if config.vq_flavor == "gumbel":
        print("gumbel hyperparameters: " + json.dumps(hparams))
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    with device_scope(config):
        model = build_model(config, hparams, epochs * steps_per_epoch)
        # Restoring a backup (and KMeansInit) needs the variables before fit.
        model.build((None,) + tuple(train_data.element_spec.shape[1:]))
        schedules = []
        if config.vq_flavor == "gumbel":
            schedules = builders.gumbel_callbacks(hparams, epochs * steps_per_epoch)
        callbacks = make_callbacks(
            config, model, schedules, train_data, val_data, steps_per_epoch
        )
        best = next(c for c in callbacks if isinstance(c, BestCheckpoint))
        backup = StepBackup(backup_dir, config.backup_every, best_checkpoint=best)
        # Only now, with data and model in hand, is this run's record written.
        run_directory.write_run_config(config.out, record)
        fit_resumable(
            model,
            train_data.repeat(),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            backup=backup,
            validation_data=val_data,
            callbacks=callbacks + extra_callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=fit_verbosity(),
        )
        save_finite_model(model, os.path.join(config.out, "model.keras"))
        backup.remove()  # only now: a kill before leaves a resumable run
        logs = model.evaluate(val_data, return_dict=True, verbose=0)
    summary = ", ".join(f"{key} {value:.4f}" for key, value in sorted(logs.items()))
    print(f"validation: {summary}")
    print(f"wrote {config.out}: {OUTPUTS}")
    return logs


def build_model(config, hparams, total_steps):
    """The compiled model of `config` for a run of `total_steps` steps;
    `BadInput` where the settings make no valid model (they are flags)."""
    quantizer_kwargs = config.quantizer_options()
    if config.vq_flavor == "gumbel":
        quantizer_kwargs = builders.gumbel_quantizer_kwargs(hparams)
    if config.vq_flavor in SIZED_BY_EMBEDDINGS:
        quantizer_kwargs["num_embeddings"] = config.num_embeddings
        quantizer_kwargs["embedding_dim"] = config.embedding_dim
    schedule = builders.learning_rate_schedule(
        hparams, total_steps, decay=config.lr_decay
    )
    try:
        return builders.build_model(
            learning_rate=schedule,
            vq_flavor=config.vq_flavor,
            enc_dec_flavor=config.enc_dec_flavor,
            loss_flavor=config.loss_flavor,
            n_hid=config.network_width(),
            enc_dec_kwargs=config.network_options(),
            seed_faithful=config.seed_faithful,
            image_size=config.image_size,
            adversarial=config.adversarial_options(),
            perceptual_model=config.perceptual_model(),
            **quantizer_kwargs,
        )
    except BadInput:
        raise
    except ValueError as error:
        # The layers' own argument checks: here every argument is a flag.
        raise BadInput(str(error)) from error


def device_scope(config):
    """Where the model is built and trained: one device, or `gpus` of them."""
    if distribution.tf_config_workers() > 1:
        raise BadInput(
            "TF_CONFIG names several workers: train.py trains on one machine; "
            "see docs/distributed.md for multi-worker training from Python."
        )
    if config.gpus <= 1:
        return contextlib.nullcontext()
    try:
        scope = distribution.distribution_scope(config.gpus, DEVICE_TYPE)
    except ValueError as error:
        raise BadInput(f"--gpus {config.gpus}: {error}") from error
    print(f"training on {config.gpus} {DEVICE_TYPE} devices")
    return scope


def fit_verbosity():
    """A progress bar on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def make_callbacks(config, model, schedules, train_data, val_data, steps_per_epoch):
    """The run's callbacks, in the order they must run."""
    metrics_csv = os.path.join(config.out, "metrics.csv")
    positions = (config.image_size // (model.stride or 1)) ** 2
    logged = max(MIN_LOGGED_IMAGES, -(-LOGGED_POSITIONS // positions))
    callbacks = [
        StopOnDivergence(),  # first: nothing else sees a diverged step
        # Before the loggers (they write their values into the epoch logs).
        *schedules,
        BestCheckpoint(
            os.path.join(config.out, "best.keras"), monitor="val_recon_loss"
        ),
        MetricsLogger(metrics_csv, append=config.resume),
        # After the MetricsLogger: it draws the file's rows, this epoch's included.
        TrainingCurves(metrics_csv, steps_per_epoch, title=config.out),
        keras.callbacks.TensorBoard(os.path.join(config.out, "tensorboard")),
        ReconstructionLogger(
            spread_images(val_data, logged, MAX_SCANNED_BATCHES),
            config.out,
            log_dir=os.path.join(config.out, "tensorboard"),
        ),
    ]
    initializable = QUANTIZERS[config.vq_flavor].initializable_codes
    if initializable and not config.no_kmeans_init:
        codes = getattr(model.quantizer, "num_embeddings", 0)
        kmeans = KMeansInit(
            train_data,
            num_samples=max(KMEANS_LATENTS, KMEANS_LATENTS_PER_CODE * codes),
            seed=config.seed,
            verbose=fit_verbosity(),
        )
        callbacks.insert(0, kmeans)
    return callbacks


def spread_images(dataset, count, max_batches):
    """About `count` images spread evenly over the first `max_batches`
    batches of `dataset`, keeping only those in memory as it reads."""
    batches = int(dataset.cardinality())
    batches = max_batches if batches < 0 else min(batches, max_batches)
    kept, seen, every = [], 0, None
    for batch in dataset.take(batches).as_numpy_iterator():
        images = images_of(batch)
        if every is None:  # the first batch tells the batch size
            every = max(1, batches * len(images) // count)
        first = -seen % every
        kept.append(images[first::every])
        seen += len(images)
    return np.concatenate(kept)[:count]


def divergence_advice(config, error):
    """The one-line message of a diverged run: what, and what to try."""
    state = StepBackup.read_state(os.path.join(config.out, "backup"))
    if state:
        again = (
            f"the backup of step {state['step']} is kept: rerun with --resume and "
            "a smaller --learning_rate"
        )
    else:
        again = "no backup was written yet: rerun with a smaller --learning_rate"
    if config.mixed_precision:
        again += " or without --mixed_precision"
    return f"{error}; nothing non-finite was saved; {again}."
