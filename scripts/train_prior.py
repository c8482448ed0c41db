"""Trains a token prior (`TokenPrior`) on the token shards of a split.

    python scripts/train_prior.py --tokens tokens/sample-train \\
        --val_tokens tokens/sample-validation --out runs/prior

reads the shards of `scripts/tokenize_dataset.py` (npy or TFRecord; class
labels where they hold them make the prior class-conditional, unless
`--unconditional`), trains with `fit` and writes into --out:

- `prior.keras`: the trained prior (loads after `import keras_dvq`);
- `metrics.csv`: loss and val_loss per epoch (nats per token);
- `training_curves.png`: both curves in bits per token, with the baselines;
- `bits_per_token.json`: the validation bits per token of the prior beside
  two baselines on the same split: the cross-entropy of a unigram model (the
  training split's token histogram, add-one smoothed) and log2 of the
  vocabulary (a uniform guess); also the entropy of the training histogram
  itself. Without `--val_tokens`, all of them are measured on the training
  split (and say so).

The defaults are the prior of docs/prior.md (about 10 minutes on a loaded
2-core CPU, 2.59 validation bits per token on `sample`).
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (the input pipeline only)

from keras_dvq.data.token_shards import check_same_tokens  # noqa: E402
from keras_dvq.data.token_shards import load_token_shards  # noqa: E402
from keras_dvq.evaluation import plots  # noqa: E402
from keras_dvq.evaluation.measures import entropy_bits  # noqa: E402
from keras_dvq.models import TokenPrior  # noqa: E402
from keras_dvq.training.builders import run_length  # noqa: E402
from keras_dvq.utils import atomic  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.cli import positive_float  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.errors import BadInput  # noqa: E402

BITS_FILE = "bits_per_token.json"


def dropout_rate(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a token prior on token shards (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--tokens", required=True, help="training shards (tokenize_dataset.py)")
    add("--val_tokens", default=None, help="validation shards")
    add("--out", required=True, help="output directory")
    add("--hidden_dim", type=positive_int, default=64)
    add("--num_layers", type=positive_int, default=2)
    add("--num_heads", type=positive_int, default=4)
    add("--dropout", type=dropout_rate, default=0.1)
    add("--batch_size", type=positive_int, default=64)
    add("--max_steps", type=positive_int, default=900)
    add("--learning_rate", type=positive_float, default=2e-3)
    add("--seed", type=int, default=0)
    add(
        "--unconditional",
        action="store_true",
        help="ignore the shards' class labels",
    )
    return parser.parse_args(argv)


def load_splits(args):
    train = load_token_shards(args.tokens, "--tokens")
    val = None
    if args.val_tokens:
        val = load_token_shards(args.val_tokens, "--val_tokens")
        check_same_tokens(
            val,
            train.vocabulary_size,
            train.token_shape,
            "--val_tokens",
            f"the --tokens shards {args.tokens}",
        )
    return train, val


def use_classes(args, train, val):
    """Whether the prior is class-conditional: labels in every split."""
    if args.unconditional or train.labels is None:
        return False
    if val is not None and (val.labels is None or val.class_names != train.class_names):
        raise BadInput(
            f"--val_tokens {args.val_tokens}: its classes "
            f"({val.class_names}) are not those of --tokens "
            f"({train.class_names}); pass --unconditional to ignore labels."
        )
    return True


def model_inputs(shards, conditional):
    if conditional:
        return {"tokens": shards.tokens, "class_ids": shards.labels}
    return shards.tokens


def unigram_baselines(train, evaluated):
    """Bits per token of frequency-only models; `evaluated` is the split the
    prior's bits are measured on."""
    counts = np.bincount(train.tokens.ravel(), minlength=train.vocabulary_size)
    train_entropy = float(entropy_bits(counts))
    smoothed = (counts + 1) / (counts.sum() + train.vocabulary_size)
    cross_entropy = float(-np.log2(smoothed[evaluated.tokens.ravel()]).mean())
    return {
        "unigram_cross_entropy": cross_entropy,
        "train_histogram_entropy": train_entropy,
        "log2_vocabulary": math.log2(train.vocabulary_size),
    }


def train(args):
    train_shards, val_shards = load_splits(args)
    conditional = use_classes(args, train_shards, val_shards)
    if args.hidden_dim % args.num_heads:
        raise BadInput(
            f"--num_heads {args.num_heads} must divide --hidden_dim {args.hidden_dim}."
        )
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    prior = TokenPrior(
        vocabulary_size=train_shards.vocabulary_size,
        token_shape=train_shards.token_shape,
        num_classes=train_shards.num_classes if conditional else 0,
        hidden_dim=args.hidden_dim,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        dropout=args.dropout,
    )
    batches_per_pass = max(1, len(train_shards.tokens) // args.batch_size)
    epochs, steps_per_epoch = run_length(batches_per_pass, args.max_steps)
    warmup = min(100, epochs * steps_per_epoch // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, epochs * steps_per_epoch - warmup),
        alpha=0.1,
        warmup_target=args.learning_rate,
        warmup_steps=warmup,
    )
    prior.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01))
    evaluated = val_shards if val_shards is not None else train_shards
    split = "validation" if val_shards is not None else "train"
    print(
        f"prior: {prior.count_params():,} parameters, "
        f"{'class-conditional' if conditional else 'unconditional'}, "
        f"{epochs} epoch(s) x {steps_per_epoch} steps of batch {args.batch_size}"
    )
    # Shuffled and repeated, so that epochs of `steps_per_epoch` steps never
    # run out of data (a NumPy input is not restarted between such epochs).
    train_data = (
        tf.data.Dataset.from_tensor_slices(model_inputs(train_shards, conditional))
        .shuffle(len(train_shards.tokens), seed=args.seed)
        .repeat()
        .batch(args.batch_size, drop_remainder=True)
        .prefetch(2)
    )
    history = prior.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=(
            (model_inputs(val_shards, conditional),) if val_shards else None
        ),
        validation_batch_size=256,
        shuffle=False,  # the pipeline shuffles
        callbacks=[keras.callbacks.CSVLogger(os.path.join(args.out, "metrics.csv"))],
        verbose=1 if sys.stdout.isatty() else 2,
    ).history
    atomic.save_model(prior, os.path.join(args.out, "prior.keras"))
    nats = prior.evaluate(
        model_inputs(evaluated, conditional), batch_size=256, verbose=0
    )
    bits = {
        "split": split,
        "bits_per_token": nats / math.log(2),
        **unigram_baselines(train_shards, evaluated),
        "num_tokens": int(evaluated.tokens.size),
        "steps": epochs * steps_per_epoch,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "conditional": conditional,
        "parameters": prior.count_params(),
    }
    bits["reduction_vs_unigram"] = 1 - (
        bits["bits_per_token"] / bits["unigram_cross_entropy"]
    )
    atomic.write_text(
        os.path.join(args.out, BITS_FILE), json.dumps(bits, indent=2) + "\n"
    )
    plots.save_figure(
        plots.prior_curves_figure(history, bits, split),
        os.path.join(args.out, "training_curves.png"),
    )
    print(
        f"{split} bits per token: prior {bits['bits_per_token']:.3f}, unigram "
        f"{bits['unigram_cross_entropy']:.3f} "
        f"({bits['reduction_vs_unigram']:.1%} under it), log2 K "
        f"{bits['log2_vocabulary']:.3f}; training histogram entropy "
        f"{bits['train_histogram_entropy']:.3f}"
    )
    print(
        f"wrote {args.out}: prior.keras, metrics.csv, training_curves.png, {BITS_FILE}"
    )
    return bits


def main(argv=None):
    return cli.run("train_prior.py", parse_args, train, argv)


if __name__ == "__main__":
    sys.exit(main())
