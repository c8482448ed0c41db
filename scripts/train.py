"""Trains a VQ-VAE with `model.fit` and writes everything a run leaves behind.

    python scripts/train.py --dataset sample --out runs/demo

Writes into --out: `model.keras` (final), `best.keras` (lowest
val_recon_loss), `metrics.csv`, `training_curves.png` (loss terms, PSNR,
perplexity and codes used against steps), `reconstructions.png` (validation
originals above their reconstructions), `codebook_usage.png`, `tensorboard/`
logs, `run_config.json` and, while running, `run.lock` and `backup/` (removed
on success) from which `--resume` continues an interrupted run, mid-epoch too.

Exit codes: 0 done, 2 bad input (one line on stderr), 3 training diverged
(non-finite loss or weights; nothing non-finite was written). See
docs/robustness.md.
"""

import argparse
import contextlib
import json
import os
import sys

# Quiet TensorFlow's start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dvq import distribution  # noqa: E402
from keras_dvq.callbacks.best_checkpoint import BestCheckpoint  # noqa: E402
from keras_dvq.callbacks.image_logging import ReconstructionLogger  # noqa: E402
from keras_dvq.callbacks.image_logging import TrainingCurves  # noqa: E402
from keras_dvq.callbacks.kmeans_init import KMeansInit  # noqa: E402
from keras_dvq.callbacks.metrics_logger import MetricsLogger  # noqa: E402
from keras_dvq.callbacks.step_backup import BACKUP_SECONDS  # noqa: E402
from keras_dvq.callbacks.step_backup import StepBackup  # noqa: E402
from keras_dvq.callbacks.stop_on_divergence import StopOnDivergence  # noqa: E402
from keras_dvq.models.vqvae import QUANTIZERS  # noqa: E402
from keras_dvq.training import builders
from keras_dvq.training import flags  # noqa: E402
from keras_dvq.training import run_directory  # noqa: E402
from keras_dvq.training.builders import GUMBEL_DEFAULTS  # noqa: E402
from keras_dvq.training.builders import HPARAM_KEYS  # noqa: E402
from keras_dvq.training.resumable import fit_resumable  # noqa: E402
from keras_dvq.utils.atomic import remove_temporaries  # noqa: E402
from keras_dvq.utils.cli import non_negative_float  # noqa: E402
from keras_dvq.utils.cli import non_negative_int  # noqa: E402
from keras_dvq.utils.cli import positive_float  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.cli import unit_fraction  # noqa: E402
from keras_dvq.utils.divergence import TrainingDiverged  # noqa: E402
from keras_dvq.utils.divergence import save_finite_model  # noqa: E402

KMEANS_IMAGES = 5000  # images handed to KMeansInit (it samples 20,000 vectors)
LOGGED_IMAGES = 1024  # validation images behind the usage chart
MAX_SCANNED_BATCHES = 64  # the logged images are spread over these
DEVICE_TYPE = "GPU"  # what --gpus counts (tests count logical CPU devices)
EXIT_DIVERGED = 3  # distinct from 2 (bad input): retrying may help
# Flags that do not define the run (stored in run_config.json for --resume to
# compare), and those a resumed run may change (after a divergence).
NOT_RUN_CONFIG = ("out", "resume", "gpus", "hparams", "data_dir", "backup_every")
MAY_CHANGE_ON_RESUME = ("learning_rate", "mixed_precision")


def make_parser():
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a VQ-VAE (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    # The original repo's flags.
    add(
        "--vq_flavor",
        choices=QUANTIZERS.choices,
        type=QUANTIZERS.flag_type,
        default="vq",
    )
    flags.add_model_flags(parser)
    add(
        "--gpus",
        type=non_negative_int,
        default=0,
        help="devices to train on; N > 1: MirroredStrategy (TensorFlow) or "
        "DataParallel (JAX), --batch_size being the global batch",
    )
    # Ours.
    add("--out", required=True, help="output directory")
    add("--max_steps", type=positive_int, default=1500)
    add("--epochs", type=positive_int, default=None, help="full passes instead")
    add("--resume", action="store_true", help="continue an interrupted run")
    add(
        "--backup_every",
        type=positive_int,
        default=None,
        metavar="STEPS",
        help="back up the training state every STEPS steps (default: every "
        f"{BACKUP_SECONDS / 60:g} minutes) and at each epoch end",
    )
    add(
        "--seed_faithful",
        action="store_true",
        help="the original repo's VQ recipe: gradient codebook, no restarts",
    )
    add(
        "--no_kmeans_init",
        action="store_true",
        help="skip the k-means codebook initialization (vq, rvq)",
    )
    add(
        "--mixed_precision",
        action="store_true",
        help="mixed_bfloat16 encoder/decoder; the quantizer stays float32",
    )
    add(
        "--hparams",
        metavar="JSON",
        help="a file of flag values, e.g. scripts/tune_gumbel.py's "
        "best_hyperparameters.json; keys: " + ", ".join(HPARAM_KEYS) + "; flags "
        "given on the command line win",
    )
    # Unset flags stay absent (SUPPRESS): their defaults depend on --vq_flavor.
    unset = argparse.SUPPRESS
    add(
        "--learning_rate",
        type=positive_float,
        default=unset,
        help=f"peak learning rate (default: {builders.LEARNING_RATE}; gumbel: "
        f"{GUMBEL_DEFAULTS['learning_rate']:g})",
    )
    add(
        "--lr_decay",
        choices=list(builders.LEARNING_RATE_DECAYS),
        default="original",
        help="length of the learning rate's cosine decay: "
        + "; ".join(f"{k}: {v}" for k, v in builders.LEARNING_RATE_DECAYS.items()),
    )
    gumbel = parser.add_argument_group(
        "gumbel flavor",
        "Schedule lengths are fractions of the run's total steps (above 1: the "
        "schedule ends after the run); the last --decoder_fraction trains the "
        "decoder alone, on argmax codes, at --decoder_learning_rate. Defaults: "
        "docs/gumbel_tuning.md.",
    )
    for name, kind in (
        ("temperature_start", positive_float),
        ("temperature_end", positive_float),
        ("temperature_anneal_fraction", positive_float),
        ("kl_weight", non_negative_float),
        ("kl_ramp_fraction", positive_float),
        ("diversity_weight", non_negative_float),
        ("balance_rate", non_negative_float),
        ("decoder_fraction", unit_fraction),
        ("decoder_learning_rate", positive_float),
    ):
        gumbel.add_argument(
            f"--{name}",
            type=kind,
            default=unset,
            help=f"default: {GUMBEL_DEFAULTS[name]:g}",
        )
    gumbel.add_argument(
        "--straight_through",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="hard one-hot forward pass (default: "
        f"{GUMBEL_DEFAULTS['straight_through']})",
    )
    add_quantizer_flags(parser, unset)
    return parser


# The flags of one quantizer flavor each, with the argument they set.
FLAVOR_FLAGS = {
    "vq": ("use_cosine_sim", "rotation_trick"),
    "fsq": ("levels",),
    "lfq": ("codebook_bits", "entropy_loss_weight"),
    "rvq": ("num_quantizers", "quantizer_dropout"),
}
# The flavors whose quantizers size codes by --num_embeddings/--embedding_dim.
SIZED_BY_EMBEDDINGS = ("vq", "gumbel", "rvq")


def levels_list(text):
    try:
        levels = tuple(int(level) for level in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 2:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 2 (e.g. 8,5,5,5), got {text}"
        )
    return levels


def add_quantizer_flags(parser, unset):
    """The flags of the vqvae, fsq, lfq and rvq flavors (docs/quantizers.md);
    unset ones keep the quantizer's defaults."""
    vqvae = parser.add_argument_group("vq flavor")
    for name, help_text in (
        ("use_cosine_sim", "match l2-normalized vectors and codes"),
        ("rotation_trick", "gradients through the rotation trick"),
    ):
        vqvae.add_argument(
            f"--{name}", action="store_const", const=True, default=unset, help=help_text
        )
    fsq = parser.add_argument_group("fsq flavor")
    fsq.add_argument(
        "--levels",
        type=levels_list,
        default=unset,
        help="levels per latent dimension (default: 8,5,5,5, 1,000 codes)",
    )
    lfq = parser.add_argument_group("lfq flavor")
    lfq.add_argument(
        "--codebook_bits", type=positive_int, default=unset, help="default: 10"
    )
    lfq.add_argument(
        "--entropy_loss_weight",
        type=non_negative_float,
        default=unset,
        help="default: 0.1",
    )
    rvq = parser.add_argument_group("rvq flavor")
    rvq.add_argument(
        "--num_quantizers", type=positive_int, default=unset, help="default: 4"
    )
    rvq.add_argument(
        "--quantizer_dropout",
        type=non_negative_float,
        default=unset,
        help="default: 0 (every stage always)",
    )


def quantizer_options(args):
    """The quantizer arguments of the flavor flags given; `ValueError` for a
    flag of another flavor."""
    options = {}
    for flavor, names in FLAVOR_FLAGS.items():
        for name in names:
            if not hasattr(args, name):
                continue
            if flavor != args.vq_flavor:
                raise ValueError(f"--{name} applies to --vq_flavor {flavor} only.")
            options[name] = getattr(args, name)
    return options


def parse_args(argv=None):
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.hparams:
        try:
            words = hparams_argv(args.hparams)
        except ValueError as error:
            parser.error(f"--hparams {args.hparams}: {error}")
        # The file's values first: a flag repeated on the command line wins.
        args = parser.parse_args(words + argv)
    if args.vq_flavor not in SIZED_BY_EMBEDDINGS:
        for name in ("num_embeddings", "embedding_dim"):
            if any(word.split("=")[0] == f"--{name}" for word in argv):
                parser.error(
                    f"--{name} does not apply to --vq_flavor {args.vq_flavor} "
                    "(see --levels and --codebook_bits)"
                )
    return args


def hparams_argv(path):
    """The command-line words that a `--hparams` JSON file stands for."""
    try:
        with open(path) as file:
            values = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    if not isinstance(values, dict):
        raise ValueError("expected a JSON object of flag values")
    words = []
    for key, value in values.items():
        if key not in HPARAM_KEYS:
            raise ValueError(
                f"unknown key {key!r}; expected some of: {', '.join(HPARAM_KEYS)}"
            )
        if key == "straight_through":
            if not isinstance(value, bool):
                raise ValueError(
                    f"'straight_through' must be true or false, got {value!r}"
                )
            words.append("--straight_through" if value else "--no-straight_through")
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"bad value for {key!r}: {json.dumps(value)}")
        else:
            words += [f"--{key}", str(value)]
    return words


def recipe_hparams(args):
    """The learning rate and, for the gumbel flavor, its hyperparameters:
    the flags given, else the flavor's defaults."""
    given = {key: getattr(args, key) for key in GUMBEL_DEFAULTS if hasattr(args, key)}
    if args.vq_flavor == "gumbel":
        return {**GUMBEL_DEFAULTS, **given}
    gumbel_only = sorted(set(given) - {"learning_rate"})
    if gumbel_only:
        raise ValueError(f"--{gumbel_only[0]} applies to --vq_flavor gumbel only.")
    return {"learning_rate": given.get("learning_rate", builders.LEARNING_RATE)}


def build_model(args, hparams, total_steps):
    quantizer_kwargs = quantizer_options(args)
    if args.vq_flavor == "gumbel":
        quantizer_kwargs = builders.gumbel_quantizer_kwargs(hparams)
    if args.vq_flavor in SIZED_BY_EMBEDDINGS:
        quantizer_kwargs["num_embeddings"] = args.num_embeddings
        quantizer_kwargs["embedding_dim"] = args.embedding_dim
    return builders.build_model(
        learning_rate=builders.learning_rate_schedule(
            hparams, total_steps, decay=args.lr_decay
        ),
        vq_flavor=args.vq_flavor,
        enc_dec_flavor=args.enc_dec_flavor,
        loss_flavor=args.loss_flavor,
        n_hid=args.n_hid,
        seed_faithful=args.seed_faithful,
        **quantizer_kwargs,
    )


def device_scope(args):
    """Where the model is built and trained: one device, or `--gpus` of them."""
    if distribution.tf_config_workers() > 1:
        raise ValueError(
            "TF_CONFIG names several workers: train.py trains on one machine; "
            "see docs/distributed.md for multi-worker "
            "training from Python."
        )
    if args.gpus <= 1:
        return contextlib.nullcontext()
    try:
        scope = distribution.distribution_scope(args.gpus, DEVICE_TYPE)
    except ValueError as error:
        raise ValueError(f"--gpus {args.gpus}: {error}") from error
    print(f"training on {args.gpus} {DEVICE_TYPE} devices")
    return scope


def train(args):
    # Flags of another flavor fail before anything is written.
    recipe_hparams(args)
    quantizer_options(args)
    with run_directory.RunLock(args.out):
        remove_temporaries(args.out)
        remove_temporaries(os.path.join(args.out, "backup"))
        return _train(args)


def _train(args):
    backup_dir = os.path.join(args.out, "backup")
    if os.path.isdir(backup_dir) and not args.resume:
        raise ValueError(
            f"--out {args.out} holds an interrupted run ({backup_dir}); pass "
            "--resume to continue it or choose another --out."
        )
    if args.resume and not os.path.isdir(backup_dir):
        raise ValueError(f"--resume: no interrupted run to continue in {args.out}.")
    hparams = recipe_hparams(args)
    config = {k: v for k, v in vars(args).items() if k not in NOT_RUN_CONFIG}
    changed = run_directory.check_run_config(
        args.out, {**config, **hparams}, args.resume, MAY_CHANGE_ON_RESUME
    )
    for key, (old, new) in changed.items():
        print(f"resuming with --{key} {new} (was {old})")
    keras.utils.set_random_seed(args.seed)
    # A resumed run reshuffles from another seed: it should not replay the
    # batches that the interrupted one began with.
    state = StepBackup.read_state(backup_dir) if args.resume else None
    data_seed = args.seed + (state["step"] if state else 0)

    train_data, val_data = builders.load_splits(
        args.dataset, args.batch_size, data_dir=args.data_dir, seed=data_seed
    )
    batches_per_pass = int(train_data.cardinality())
    if args.epochs:
        epochs, steps_per_epoch = args.epochs, batches_per_pass
    else:
        epochs, steps_per_epoch = builders.run_length(batches_per_pass, args.max_steps)
    if args.vq_flavor == "gumbel":
        print("gumbel hyperparameters: " + json.dumps(hparams))
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    with device_scope(args):
        model = build_model(args, hparams, epochs * steps_per_epoch)
        # Restoring a backup (and KMeansInit) needs the variables before fit.
        model.build((None,) + tuple(train_data.element_spec.shape[1:]))
        schedules = []
        if args.vq_flavor == "gumbel":
            schedules = builders.gumbel_callbacks(hparams, epochs * steps_per_epoch)
        callbacks = make_callbacks(
            args, schedules, train_data, val_data, steps_per_epoch
        )
        best = next(c for c in callbacks if isinstance(c, BestCheckpoint))
        backup = StepBackup(backup_dir, args.backup_every, best_checkpoint=best)
        fit_resumable(
            model,
            train_data.repeat(),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            backup=backup,
            validation_data=val_data,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=fit_verbosity(),
        )
        save_finite_model(model, os.path.join(args.out, "model.keras"))
        backup.remove()  # only now: a kill before leaves a resumable run
        logs = model.evaluate(val_data, return_dict=True, verbose=0)
    summary = ", ".join(f"{key} {value:.4f}" for key, value in sorted(logs.items()))
    print(f"validation: {summary}")
    print(
        f"wrote {args.out}: model.keras, best.keras, metrics.csv, "
        "training_curves.png, reconstructions.png, codebook_usage.png, tensorboard/"
    )
    return logs


def fit_verbosity():
    """A progress bar on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


def make_callbacks(args, schedules, train_data, val_data, steps_per_epoch):
    metrics_csv = os.path.join(args.out, "metrics.csv")
    validation_images = np.concatenate(list(val_data.take(MAX_SCANNED_BATCHES)))
    spread = np.linspace(0, len(validation_images) - 1, LOGGED_IMAGES).astype(int)
    callbacks = [
        StopOnDivergence(),  # first: nothing else sees a diverged step
        # Before the loggers (they write their values into the epoch logs).
        *schedules,
        BestCheckpoint(os.path.join(args.out, "best.keras"), monitor="val_recon_loss"),
        MetricsLogger(metrics_csv, append=args.resume),
        # After the MetricsLogger: it draws the file's rows, this epoch's included.
        TrainingCurves(metrics_csv, steps_per_epoch, title=args.out),
        keras.callbacks.TensorBoard(os.path.join(args.out, "tensorboard")),
        ReconstructionLogger(
            validation_images[np.unique(spread)],
            args.out,
            log_dir=os.path.join(args.out, "tensorboard"),
        ),
    ]
    if QUANTIZERS[args.vq_flavor].initializable_codes and not args.no_kmeans_init:
        kmeans_images = np.concatenate(
            list(train_data.take(-(-KMEANS_IMAGES // args.batch_size)))
        )
        callbacks.insert(
            0, KMeansInit(kmeans_images, seed=args.seed, verbose=fit_verbosity())
        )
    return callbacks


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except ValueError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"train.py: error: {divergence_advice(args, error)}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def divergence_advice(args, error):
    """The one-line message of a diverged run: what, and what to try."""
    state = StepBackup.read_state(os.path.join(args.out, "backup"))
    if state:
        again = (
            f"the backup of step {state['step']} is kept: rerun with --resume and "
            "a smaller --learning_rate"
        )
    else:
        again = "no backup was written yet: rerun with a smaller --learning_rate"
    if args.mixed_precision:
        again += " or without --mixed_precision"
    return f"{error}; nothing non-finite was saved; {again}."


if __name__ == "__main__":
    sys.exit(main())
