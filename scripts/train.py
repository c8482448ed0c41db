"""Trains a VQ-VAE with `model.fit` and writes everything a run leaves behind.

    python scripts/train.py --dataset sample --out runs/demo

Writes into --out: `model.keras` (final), `best.keras` (lowest
val_recon_loss), `metrics.csv`, `reconstructions.png` (validation originals
above their reconstructions), `codebook_usage.png`, `tensorboard/` logs and,
while running, `backup/` (removed on success) from which `--resume` continues
an interrupted run.
"""

import argparse
import math
import os
import sys

# Quiet TensorFlow's start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dvq.callbacks import KLWeightRamp  # noqa: E402
from keras_dvq.callbacks import KMeansInit  # noqa: E402
from keras_dvq.callbacks import TemperatureAnnealing  # noqa: E402
from keras_dvq.data import load_dataset  # noqa: E402
from keras_dvq.image_logging import ReconstructionLogger  # noqa: E402
from keras_dvq.models import VQVAE  # noqa: E402
from keras_dvq.schedules import CosineAnnealing  # noqa: E402

KMEANS_IMAGES = 5000  # images handed to KMeansInit (it samples 20,000 vectors)
LOGGED_IMAGES = 1024  # validation images behind the usage chart
MAX_SCANNED_BATCHES = 64  # the logged images are spread over these


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a VQ-VAE (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    # The original repo's flags.
    add("--vq_flavor", choices=["vqvae", "gumbel"], default="vqvae")
    add("--enc_dec_flavor", choices=["deepmind", "openai"], default="deepmind")
    add("--loss_flavor", choices=["l2", "logit_laplace"], default="l2")
    add("--num_embeddings", type=positive_int, default=512)
    add("--embedding_dim", type=positive_int, default=64)
    add("--n_hid", type=positive_int, default=64)
    add("--batch_size", type=positive_int, default=128)
    add("--data_dir", default=None, help="tensorflow-datasets data directory")
    add("--gpus", type=non_negative_int, default=0, help="0 or 1 (one device)")
    # Ours.
    add("--dataset", default="cifar10", help="sample | folder:PATH | a tfds name")
    add("--out", required=True, help="output directory")
    add("--max_steps", type=positive_int, default=1500)
    add("--epochs", type=positive_int, default=None, help="full passes instead")
    add("--seed", type=int, default=0)
    add("--resume", action="store_true", help="continue an interrupted run")
    add(
        "--seed_faithful",
        action="store_true",
        help="the original repo's VQ recipe: gradient codebook, no restarts",
    )
    add(
        "--no_kmeans_init",
        action="store_true",
        help="skip the k-means codebook initialization (vqvae flavor)",
    )
    add("--learning_rate", type=positive_float, default=3e-4)
    add(
        "--mixed_precision",
        action="store_true",
        help="mixed_bfloat16 encoder/decoder; the quantizer stays float32",
    )
    return parser.parse_args(argv)


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_model(args):
    model = VQVAE.from_flavors(
        vq_flavor=args.vq_flavor,
        enc_dec_flavor=args.enc_dec_flavor,
        loss_flavor=args.loss_flavor,
        num_embeddings=args.num_embeddings,
        embedding_dim=args.embedding_dim,
        n_hid=args.n_hid,
        seed_faithful=args.seed_faithful,
    )
    # The original's cosine decay 3e-4 -> 1.25e-6 over 1.2M steps.
    schedule = CosineAnnealing(start_value=args.learning_rate)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    return model


def train(args):
    if args.gpus > 1:
        raise ValueError(
            f"--gpus {args.gpus}: multi-device training is not available in this "
            "version; use --gpus 0 or 1."
        )
    backup_dir = os.path.join(args.out, "backup")
    if os.path.isdir(backup_dir) and not args.resume:
        raise ValueError(
            f"--out {args.out} holds an interrupted run ({backup_dir}); pass "
            "--resume to continue it or choose another --out."
        )
    if args.resume and not os.path.isdir(backup_dir):
        raise ValueError(f"--resume: no interrupted run to continue in {args.out}.")
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    train_data = load_dataset(
        args.dataset, "train", args.batch_size, data_dir=args.data_dir, seed=args.seed
    )
    val_data = load_dataset(
        args.dataset, "validation", args.batch_size, data_dir=args.data_dir
    )
    batches_per_pass = int(train_data.cardinality())
    if batches_per_pass < 1:
        raise ValueError(
            f"--dataset {args.dataset}: fewer training images than one batch of "
            f"--batch_size {args.batch_size}."
        )
    if args.epochs:
        epochs, steps_per_epoch = args.epochs, batches_per_pass
    else:
        # Epochs of (at most) one pass each, max_steps in all (rounded up).
        epochs = math.ceil(args.max_steps / batches_per_pass)
        steps_per_epoch = math.ceil(args.max_steps / epochs)
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    model = build_model(args)
    # BackupAndRestore (and KMeansInit) need the variables before fit starts.
    model.build((None,) + tuple(train_data.element_spec.shape[1:]))
    callbacks = make_callbacks(args, model, train_data, val_data, backup_dir)
    model.fit(
        train_data.repeat(),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_data,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles
        verbose=1 if sys.stdout.isatty() else 2,
    )
    model.save(os.path.join(args.out, "model.keras"))
    logs = model.evaluate(val_data, return_dict=True, verbose=0)
    summary = ", ".join(f"{key} {value:.4f}" for key, value in sorted(logs.items()))
    print(f"validation: {summary}")
    print(f"wrote {args.out}: model.keras, best.keras, metrics.csv, PNGs, tensorboard/")
    return logs


def make_callbacks(args, model, train_data, val_data, backup_dir):
    validation_images = np.concatenate(list(val_data.take(MAX_SCANNED_BATCHES)))
    spread = np.linspace(0, len(validation_images) - 1, LOGGED_IMAGES).astype(int)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.out, "best.keras"),
            monitor="val_recon_loss",
            mode="min",
            save_best_only=True,
        ),
        keras.callbacks.CSVLogger(
            os.path.join(args.out, "metrics.csv"), append=args.resume
        ),
        keras.callbacks.TensorBoard(os.path.join(args.out, "tensorboard")),
        ReconstructionLogger(
            validation_images[np.unique(spread)],
            args.out,
            log_dir=os.path.join(args.out, "tensorboard"),
        ),
    ]
    if args.vq_flavor == "vqvae" and not args.no_kmeans_init:
        kmeans_images = np.concatenate(
            list(train_data.take(-(-KMEANS_IMAGES // args.batch_size)))
        )
        callbacks.insert(0, KMeansInit(kmeans_images, seed=args.seed))
    if args.vq_flavor == "gumbel":
        callbacks += [TemperatureAnnealing(), KLWeightRamp()]
    return callbacks


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except ValueError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
