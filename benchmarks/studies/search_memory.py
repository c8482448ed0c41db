"""Peak memory and step time of a K=8192 VQ-VAE with and without the
blocked code search.

    python -m benchmarks.studies.search_memory blocks
    python -m benchmarks.studies.search_memory whole

Trains `VQVAE.from_flavors(num_embeddings=8192)` (DeepMind encoder and
decoder, stride 4) on random 128x128 images at batch 32 with the active Keras
backend: one warm-up `fit` of 4 steps, then 3 timed ones. `blocks` keeps
`VectorQuantizer`'s search in blocks of `SEARCH_BLOCK_ELEMENTS` distances;
`whole` raises the limit so that each batch's 32,768 x 8,192 distances are
computed at once. Prints the process' peak RSS, the seconds per step of each
timed `fit` and the load average. Run each mode in its own process: peak RSS
never goes down. docs/benchmarks.md reads them. The size flags exist for the
smoke test.
"""

import argparse
import contextlib
import os
import time

import keras
import numpy as np

from benchmarks.probes import peak_memory_mb
from keras_dvq.layers import vector_quantizer
from keras_dvq.models import VQVAE
from keras_dvq.utils import cli

STEPS, TIMED_FITS = 4, 3


@contextlib.contextmanager
def search_mode(mode):
    """`whole`: one block holds every distance, until the block ends."""
    limit = vector_quantizer.SEARCH_BLOCK_ELEMENTS
    if mode == "whole":
        vector_quantizer.SEARCH_BLOCK_ELEMENTS = 2**40
    try:
        yield
    finally:
        vector_quantizer.SEARCH_BLOCK_ELEMENTS = limit


def step_seconds(mode, batch_size, image_size, num_embeddings, n_hid=64):
    """Seconds per step of `TIMED_FITS` fits of `STEPS` steps, after a
    warm-up fit, with the code search of `mode`."""
    with search_mode(mode):
        model = VQVAE.from_flavors(num_embeddings=num_embeddings, n_hid=n_hid)
        model.compile(optimizer=keras.optimizers.AdamW(3e-4))
        shape = (batch_size * STEPS, image_size, image_size, 3)
        images = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        model.fit(images, batch_size=batch_size, verbose=0)  # compilation, warm-up
        seconds = []
        for _ in range(TIMED_FITS):
            start = time.perf_counter()
            model.fit(images, batch_size=batch_size, verbose=0)
            seconds.append((time.perf_counter() - start) / STEPS)
    return seconds


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("mode", choices=["blocks", "whole"], help="blocked or whole code search")
    add("--batch_size", type=cli.positive_int, default=32)
    add("--image_size", type=cli.positive_int, default=128)
    add("--num_embeddings", type=cli.positive_int, default=8192)
    add("--n_hid", type=cli.positive_int, default=64)
    return parser.parse_args(argv)


def measure(args):
    seconds = step_seconds(
        args.mode, args.batch_size, args.image_size, args.num_embeddings, args.n_hid
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    steps = ", ".join(f"{value:.2f}" for value in seconds)
    print(
        f"{args.mode}: peak RSS {peak_memory_mb('cpu'):,.0f} MB, s/step {steps}, "
        f"load {load}"
    )


def main(argv=None):
    return cli.run("search_memory.py", parse_args, measure, argv)


if __name__ == "__main__":
    raise SystemExit(main())
