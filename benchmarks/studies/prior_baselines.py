"""Frequency and bigram baselines for docs/prior.md, in bits per token on the
validation shards (add-one smoothed counts of the training shards).

    python -m benchmarks.studies.prior_baselines runs/tokens/sample-train \
        runs/tokens/sample-validation
"""

import argparse

import numpy as np
from keras import ops

from keras_dvq.data.token_shards import load_token_shards
from keras_dvq.evaluation import entropy_bits
from keras_dvq.utils import cli


def histogram_entropy(tokens, vocabulary_size):
    """Entropy in bits of the histogram of `tokens`."""
    counts = np.bincount(tokens.ravel(), minlength=vocabulary_size)
    return float(ops.convert_to_numpy(entropy_bits(counts)))


def smoothed(tokens, vocabulary_size):
    """Add-one smoothed code frequencies of `tokens`."""
    counts = np.bincount(tokens.ravel(), minlength=vocabulary_size) + 1
    return counts / counts.sum()


def baselines(train, val):
    """Bits per validation token of frequency-only and bigram models.

    Args:
        train: the training split's `TokenShards` (with labels).
        val: the validation split's `TokenShards` (with labels).

    Returns:
        A dict `{row name: bits per token}`, the order of docs/prior.md.
    """
    size = train.vocabulary_size
    unigram = smoothed(train.tokens, size)
    per_class = np.concatenate(
        [
            -np.log2(
                smoothed(train.tokens[train.labels == k], size)[
                    val.tokens[val.labels == k]
                ]
            )
            for k in range(train.num_classes)
        ]
    )
    seq = train.tokens.reshape(len(train.tokens), -1)
    val_seq = val.tokens.reshape(len(val.tokens), -1)
    pairs = np.ones((size, size))
    np.add.at(pairs, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
    pairs /= pairs.sum(axis=1, keepdims=True)
    bigram = np.concatenate(
        [
            -np.log2(unigram[val_seq[:, 0]]),
            -np.log2(pairs[val_seq[:, :-1].ravel(), val_seq[:, 1:].ravel()]),
        ]
    )
    return {
        "log2 K": float(np.log2(size)),
        "entropy of the training histogram": histogram_entropy(train.tokens, size),
        "unigram (training histogram)": float(
            -np.log2(unigram[val.tokens.ravel()]).mean()
        ),
        "entropy of the validation histogram (oracle)": histogram_entropy(
            val.tokens, size
        ),
        "unigram per class": float(per_class.mean()),
        "bigram (previous token, row-major)": float(bigram.mean()),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", help="training token shards (with labels)")
    parser.add_argument("validation", help="validation token shards (with labels)")
    return parser.parse_args(argv)


def print_baselines(args):
    train = load_token_shards(args.train, "train")
    val = load_token_shards(args.validation, "validation")
    for name, bits in baselines(train, val).items():
        print(f"{name:46s} {bits:.3f}")


def main(argv=None):
    return cli.run("prior_baselines.py", parse_args, print_baselines, argv)


if __name__ == "__main__":
    raise SystemExit(main())
