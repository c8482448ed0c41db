"""Codebook usage after a short training, to compare dtype policies."""

import time

from benchmarks.data import sample_images
from keras_dvq.callbacks.kmeans_init import KMeansInit
from keras_dvq.models import VQVAE


def measure_usage(config):
    """Codebook usage of the DeepMind VQ-VAE after a short training on
    `sample` (k-means init, as scripts/train.py), on the validation split."""
    batch_size = config["batch_size"]
    steps = config["usage_steps"]
    images = sample_images(steps * batch_size)
    model = VQVAE.from_flavors(n_hid=config["n_hid"])
    model.compile()
    start = time.perf_counter()
    model.fit(
        images,
        batch_size=batch_size,
        epochs=1,
        verbose=0,
        callbacks=[KMeansInit(images[:10_000])],
    )
    seconds = time.perf_counter() - start
    logs = model.evaluate(
        sample_images(4250, "validation"),
        batch_size=batch_size,
        verbose=0,
        return_dict=True,
    )
    return {
        "steps": steps,
        "seconds": seconds,
        "recon_loss": logs["recon_loss"],
        "perplexity": logs["perplexity"],
        "cluster_use": logs["cluster_use"],
    }
