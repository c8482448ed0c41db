"""How far a Gumbel model's tokens are from what its decoder trained on.

    python docs/gumbel_mismatch.py RUN/model.keras [RUN/model.keras ...]

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

import sys

import keras
import numpy as np
from keras import ops

from keras_dvq.data.datasets import load_dataset
from keras_dvq.evaluation.measures import psnr
from keras_dvq.layers import GumbelQuantizer

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
    log_q = ops.log_softmax(logits, axis=-1)
    q = ops.exp(log_q)
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
        float(ops.convert_to_numpy(-ops.mean(ops.sum(q * log_q, axis=-1)))),
        float(ops.convert_to_numpy(ops.mean(ops.max(q, axis=-1)))),
    )
    return [(name, mean_psnr(model, images, z)) for name, z in named], statistics


def main(paths):
    batches = list(
        load_dataset("sample", "validation", batch_size=BATCH_SIZE).as_numpy_iterator()
    )
    for path in paths:
        model = keras.saving.load_model(path)
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
        print(path)
        for name, total in sums.items():
            print(f"  {name:16s} PSNR {total / count:6.2f} dB")
        if len(sums) > 1:
            entropy, top = statistics / count
            print(
                f"  entropy per position {entropy:.2f} nats, "
                f"mean max probability {top:.3f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
