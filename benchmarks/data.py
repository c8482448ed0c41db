"""The benchmark's images (patches of `sample`) and the input-pipeline measure."""

import os
import time

import numpy as np

from keras_dvq.data.sample import load_sample_patches


def sample_images(count, split="train", image_size=32):
    """`count` patches of `sample` at `image_size`, repeated as needed."""
    images = load_sample_patches(split, patch_size=image_size)
    return images[np.arange(count) % len(images)]


def write_image_folder(folder, count):
    """`count` of `sample`'s training patches as PNG files in a new `folder`;
    returns its `folder:` dataset name (every tenth file validates)."""
    from PIL import Image

    os.makedirs(folder)
    for index, image in enumerate(sample_images(count)):
        Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.png"))
    return f"folder:{folder}"


def measure_pipeline(config):
    """Images per second of `load_dataset(dataset, "train")` alone, at the
    run's image size (`sample` and 32 px unless set)."""
    from keras_dvq.data.datasets import load_dataset

    batch_size = config["batch_size"]
    dataset = load_dataset(
        config.get("dataset") or "sample",
        "train",
        batch_size=batch_size,
        image_size=config.get("image_size") or 32,
        seed=0,
    ).repeat()
    iterator = iter(dataset)
    for _ in range(config["pipeline_batches"] // 5):  # warm-up: fills the buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(config["pipeline_batches"]):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"images_per_s": config["pipeline_batches"] * batch_size / seconds}
