"""The benchmark's images (patches of `sample`) and the input-pipeline measure."""

import os
import time

import numpy as np

from keras_dvq.data.sample import load_sample_patches


def sample_images(count, split="train", image_size=32):
    """`count` patches of `sample`, repeated as needed; larger sizes are
    the 32x32 patches scaled up by pixel repetition."""
    images = load_sample_patches(split)
    images = images[np.arange(count) % len(images)]
    scale = image_size // 32
    return images.repeat(scale, axis=1).repeat(scale, axis=2)


def write_image_folder(folder, count):
    """`count` of `sample`'s training patches as PNG files in a new `folder`;
    returns its `folder:` dataset name (every tenth file validates)."""
    from PIL import Image

    os.makedirs(folder)
    for index, image in enumerate(sample_images(count)):
        Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.png"))
    return f"folder:{folder}"


def measure_pipeline(config):
    """Batches per second of `load_dataset("sample", "train")` alone."""
    from keras_dvq.data.datasets import load_dataset

    batch_size = config["batch_size"]
    dataset = load_dataset("sample", "train", batch_size=batch_size, seed=0).repeat()
    iterator = iter(dataset)
    for _ in range(config["pipeline_batches"] // 5):  # warm-up: fills the buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(config["pipeline_batches"]):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"images_per_s": config["pipeline_batches"] * batch_size / seconds}
