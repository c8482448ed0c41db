"""How far a Gumbel model's tokens are from what its decoder trained on.

    python -m benchmarks.studies.gumbel_mismatch RUN/model.keras [RUN/model.keras ...]

A `GumbelQuantizer` trains its decoder on soft mixtures of codes (or noisy
one-hot samples with `straight_through`), while a tokenizer emits the argmax
code of each position. For each Gumbel model, on the whole `sample`
validation split, this prints the PSNR of four reconstructions: decoded from
the argmax codes (the tokenizer's), from the noise-free soft mixture at the
model's final temperature and at temperature 1, and from one Gumbel-noisy
sample as in training (seed 0), with the mean per-position entropy of the
code distribution (nats; log K is uniform) and its mean largest probability.
A VQ model prints its argmax row only. docs/gumbel_tuning.md reads them.
"""

import argparse

import keras
import numpy as np
from keras import ops

from keras_dvq.data.datasets import load_dataset
from keras_dvq.evaluation.measures import psnr
from keras_dvq.layers import GumbelQuantizer
from keras_dvq.ops.code_statistics import entropy
from keras_dvq.utils import cli

BATCH_SIZE = 250


def mean_psnr(model, images, quantized):
    decoded = model.reconstruction_loss.out_map(model.decoder(quantized))
    return float(np.mean(ops.convert_to_numpy(psnr(images, decoded))))


def rows(model, batch):
    """Per-batch (name, PSNR) pairs and the code distribution's statistics."""
    images = ops.convert_to_tensor(batch.astype("float32") / 255.0)
    quantizer = model.quantizer
    logits = ops.convert_to_tensor(model.project(batch, batch_size=BATCH_SIZE))
    argmax = quantizer.lookup(quantizer.tokens_of(logits))
    if not isinstance(quantizer, GumbelQuantizer):
        return [("argmax", mean_psnr(model, images, argmax))], None
    temperature = float(ops.convert_to_numpy(quantizer.temperature))
    q = ops.softmax(logits, axis=-1)
    codebook = quantizer.codebook
    noisy, _, _ = quantizer.quantize_latents(logits, training=True)
    named = [
        ("argmax", argmax),
        (
            f"soft, T={temperature:.3g}",
            ops.matmul(ops.softmax(logits / temperature), codebook),
        ),
        ("soft, T=1", ops.matmul(q, codebook)),
        ("Gumbel sample", noisy),
    ]
    statistics = (
        float(ops.convert_to_numpy(ops.mean(entropy(q)))),
        float(ops.convert_to_numpy(ops.mean(ops.max(q, axis=-1)))),
    )
    return [(name, mean_psnr(model, images, z)) for name, z in named], statistics


def mismatch(model, batches):
    """Mean PSNR per reconstruction over `batches` (uint8 image arrays), and
    the mean entropy and largest probability (`None` for a VQ model)."""
    if isinstance(model.quantizer, GumbelQuantizer):
        # The sample row is the training relaxation, also for a model
        # saved in its decoder-only phase (which trains on argmax codes).
        model.quantizer.argmax_codes.assign(0.0)
    keras.utils.set_random_seed(0)
    sums, statistics, count = {}, np.zeros(2), 0
    for batch in batches:
        batch_rows, batch_statistics = rows(model, batch)
        for name, value in batch_rows:
            sums[name] = sums.get(name, 0.0) + value * len(batch)
        if batch_statistics is not None:
            statistics += np.array(batch_statistics) * len(batch)
        count += len(batch)
    means = {name: total / count for name, total in sums.items()}
    return means, (statistics / count if len(sums) > 1 else None)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("models", nargs="+", help=".keras files of scripts/train.py")
    add("--max_batches", type=cli.positive_int, help="default: the whole split")
    return parser.parse_args(argv)


def print_mismatch(args):
    batches = load_dataset("sample", "validation", batch_size=BATCH_SIZE)
    if args.max_batches:
        batches = batches.take(args.max_batches)
    batches = list(batches.as_numpy_iterator())
    for path in args.models:
        means, statistics = mismatch(keras.saving.load_model(path), batches)
        print(path)
        for name, value in means.items():
            print(f"  {name:16s} PSNR {value:6.2f} dB")
        if statistics is not None:
            entropy_nats, top = statistics
            print(
                f"  entropy per position {entropy_nats:.2f} nats, "
                f"mean max probability {top:.3f}"
            )


def main(argv=None):
    return cli.run("gumbel_mismatch.py", parse_args, print_mismatch, argv)


if __name__ == "__main__":
    raise SystemExit(main())
