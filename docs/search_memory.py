"""Peak memory and step time of a K=8192 VQ-VAE with and without the
blocked code search.

    python docs/search_memory.py blocks
    python docs/search_memory.py whole

Trains `VQVAE.from_flavors(num_embeddings=8192)` (DeepMind encoder and
decoder, stride 4) on random 128x128 images at batch 32 with the active Keras
backend: one warm-up `fit` of 4 steps, then 3 timed ones. `blocks` keeps
`VectorQuantizer`'s search in blocks of `SEARCH_BLOCK_ELEMENTS` distances;
`whole` raises the limit so that each batch's 32,768 x 8,192 distances are
computed at once. Prints the process' peak RSS, the seconds per step of each
timed `fit` and the load average. Run each mode in its own process: peak RSS
never goes down. docs/benchmarks.md reads them.
"""

import resource
import sys
import time

import keras
import numpy as np

from keras_dvq.layers import vector_quantizer
from keras_dvq.models import VQVAE

BATCH_SIZE, STEPS, IMAGE_SIZE = 32, 4, 128


def main(mode):
    if mode not in ("blocks", "whole"):
        print(f"search_memory.py: expected 'blocks' or 'whole', got {mode!r}")
        return 2
    if mode == "whole":
        vector_quantizer.SEARCH_BLOCK_ELEMENTS = 2**40
    model = VQVAE.from_flavors(num_embeddings=8192)
    model.compile(optimizer=keras.optimizers.AdamW(3e-4))
    shape = (BATCH_SIZE * STEPS, IMAGE_SIZE, IMAGE_SIZE, 3)
    images = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    model.fit(images, batch_size=BATCH_SIZE, verbose=0)  # compilation, warm-up
    step_seconds = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(images, batch_size=BATCH_SIZE, verbose=0)
        step_seconds.append((time.perf_counter() - start) / STEPS)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/loadavg") as file:
        load = " ".join(file.read().split()[:3])
    seconds = ", ".join(f"{value:.2f}" for value in step_seconds)
    print(f"{mode}: peak RSS {peak_mb:,.0f} MB, s/step {seconds}, load {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
