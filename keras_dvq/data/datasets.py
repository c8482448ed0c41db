"""Image datasets as tf.data pipelines (TensorFlow-specific by nature).

`load_dataset(name, split)` gives batches of uint8 images `(B, S, S, 3)` for:
- `"sample"`: the bundled patches of scikit-image's photographs;
- `"folder:PATH"`: a user's own images under PATH (recursive);
- any tensorflow-datasets image dataset by name, e.g. `"cifar10"`, with the
  `"train"` split for training and `"test"` for validation.

Training splits get the original repo's augmentation (reflect-pad 4, random
crop back to the image size, horizontal flip) and a shuffle per epoch;
validation splits get neither. With `labels=True` the elements are
`(images, class_ids)` pairs; `class_names(name)` tells which datasets have
classes and what they are called.
"""

import os
import socket
import warnings

import numpy as np
import tensorflow as tf

from keras_dvq.data.sample import PHOTOGRAPHS
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
FOLDER_VALIDATION_EVERY = 10  # every 10th file (sorted) of a folder validates
PAD = 4
# TFDS fetches prepared data from this host before the dataset's own site.
TFDS_HOST = "storage.googleapis.com"


def load_dataset(
    name,
    split="train",
    batch_size=128,
    image_size=32,
    data_dir=None,
    shuffle=None,
    augment=None,
    seed=None,
    drop_remainder=None,
    labels=False,
):
    """Returns a batched, prefetched `tf.data.Dataset` of uint8 images.

    Args:
        name: `"sample"`, `"folder:PATH"` or a tensorflow-datasets name.
        split: `"train"` or `"validation"` (for tfds, the `"test"` split).
        batch_size: int. Images per batch.
        image_size: int. Side of the square images; folder images are resized
            (shorter side) and centre-cropped, tfds images resized if needed.
        data_dir: directory of tensorflow-datasets data (tfds' default if
            `None`).
        shuffle: bool. Reshuffle every epoch. Defaults to `split == "train"`.
        augment: bool. Pad-crop-flip augmentation. Defaults to
            `split == "train"`.
        seed: int or `None`. Seed of shuffling and augmentation.
        drop_remainder: bool. Drop a last partial batch. Defaults to
            `split == "train"` (a fixed batch shape compiles once).
        labels: bool. Batches of `(images, class_ids)` (int32 ids) instead
            of images; only for datasets where `class_names(name)` is not
            `None`.

    Raises:
        ValueError: for an unknown split or bad sizes.
        BadInput: for a folder without readable images, a name neither
            `sample`, a folder nor a tensorflow-datasets dataset, or tfds data
            that cannot be built, is missing and cannot be downloaded (the
            message says which, where it looked and what to do).
    """
    check_choice("split", split, ("train", "validation"))
    check_positive_int("batch_size", batch_size)
    check_positive_int("image_size", image_size)
    training = split == "train"
    shuffle = training if shuffle is None else shuffle
    augment = training if augment is None else augment
    drop_remainder = training if drop_remainder is None else drop_remainder

    if labels and class_names(name, data_dir) is None:
        raise BadInput(
            f"--dataset {name}: has no class labels; labels=True expects "
            "'sample' or a tensorflow-datasets dataset with a 'label' class "
            "feature."
        )
    if name == "sample":
        if labels:
            patches = load_sample_patches(split, return_labels=True)
        else:
            patches = load_sample_patches(split)
        dataset = tf.data.Dataset.from_tensor_slices(patches)
        dataset = dataset.map(_on_images(_resizer(image_size), labels))
    elif name.startswith("folder:"):
        images = load_image_folder(name[len("folder:") :], split, image_size)
        dataset = tf.data.Dataset.from_tensor_slices(images)
    else:
        dataset = _load_tfds(name, split, data_dir, labels).map(
            _on_images(_resizer(image_size), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    if shuffle:
        size = int(dataset.cardinality())
        buffer = size if size > 0 else 10_000
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        dataset = dataset.map(
            _on_images(_augmenter(image_size, seed), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # No tf.data autotuning: dropping an iterator joins its autotune thread,
    # which took 1-5 s here, and Keras drops one per pass over a finite
    # dataset (each validation, each epoch without `steps_per_epoch`). The
    # pipeline is as fast without it (docs/benchmarks.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def class_names(name, data_dir=None):
    """The class names of a dataset in id order, or `None` where its images
    carry no labels: `sample` has one class per photograph; a
    tensorflow-datasets dataset has the names of its `"label"` feature.
    Folders have none yet.

    Raises:
        BadInput: for a name tensorflow-datasets does not know, or a dataset
            it knows but cannot build (`load_dataset` would fail the same
            way; labels are never dropped silently).
    """
    if name == "sample":
        return list(PHOTOGRAPHS)
    if name.startswith("folder:"):
        return None
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    label = builder.info.features.get("label") if builder.info.features else None
    if isinstance(label, tfds.features.ClassLabel):
        return list(label.names)
    return None


def _on_images(function, labels):
    """`function` of an image, mapped over `(image, label)` pairs if `labels`."""
    if not labels:
        return function
    return lambda image, label: (function(image), label)


def load_image_folder(path, split="train", image_size=32):
    """Reads every image under `path` (recursive) as uint8 `(N, S, S, 3)`.

    Grayscale and RGBA images become RGB; each image is resized so that its
    shorter side is `image_size` and centre-cropped. Files that cannot be read
    are skipped with one warning that counts them. The sorted file list is
    split deterministically: every 10th file validates, the others train.
    """
    from PIL import Image

    if not os.path.isdir(path):
        raise BadInput(
            f"Dataset 'folder:{path}': no such directory. Expected "
            "'folder:PATH' with a directory of jpg/png/bmp/gif images."
        )
    files = sorted(
        os.path.join(root, file)
        for root, _, names in os.walk(path)
        for file in names
        if file.lower().endswith(IMAGE_EXTENSIONS)
    )
    in_split = [
        file
        for index, file in enumerate(files)
        if (index % FOLDER_VALIDATION_EVERY == FOLDER_VALIDATION_EVERY - 1)
        == (split == "validation")
    ]
    images, unreadable = [], 0
    for file in in_split:
        try:
            with Image.open(file) as image:
                images.append(_square_rgb(image, image_size))
        except (OSError, ValueError, SyntaxError):
            unreadable += 1
    if unreadable:
        warnings.warn(
            f"Skipped {unreadable} unreadable image file(s) of {len(in_split)} "
            f"in the {split} split of '{path}'.",
            stacklevel=2,
        )
    if not images:
        raise BadInput(
            f"Dataset 'folder:{path}' has no readable {', '.join(IMAGE_EXTENSIONS)} "
            f"images in its {split} split ({len(files)} image files found; every "
            f"{FOLDER_VALIDATION_EVERY}th validates)."
        )
    return np.stack(images)


def _square_rgb(image, size):
    from PIL import Image

    image = image.convert("RGB")
    scale = size / min(image.size)
    width = max(size, round(image.width * scale))
    height = max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _tfds_errors():
    """What tensorflow-datasets raises when a dataset it knows cannot be
    built or fetched: a missing optional dependency, the network or the file
    system, a failed or corrupt download. Other exceptions are bugs."""
    from tensorflow_datasets.core.download import DownloadError
    from tensorflow_datasets.core.download.download_manager import (
        NonMatchingChecksumError,
    )

    return (
        ImportError,
        OSError,
        tf.errors.OpError,
        DownloadError,
        NonMatchingChecksumError,
    )


def _first_line(error):
    text = str(error).strip()
    reason = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise BadInput(
            f"--dataset {name}: expected 'sample', 'folder:PATH' or a "
            f"tensorflow-datasets name; tensorflow-datasets has no {name!r} "
            f"({_first_line(error)})."
        ) from error
    except _tfds_errors() as error:
        raise BadInput(
            f"--dataset {name}: tensorflow-datasets knows it but cannot build "
            f"its builder ({_first_line(error)})."
        ) from error


def _prepare(builder, name):
    """Downloads and prepares the dataset where it is missing, or raises
    `BadInput` saying why it cannot."""
    where = f"--dataset {name}: not prepared under {builder.data_dir}"
    remedy = (
        "Prepare it on a machine with network access (`tfds build "
        f"{name}`) and pass its directory with --data_dir (data_dir=...), or "
        "use the bundled --dataset sample."
    )
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        raise BadInput(
            f"{where}, and tensorflow-datasets cannot download it: it needs a "
            f"manual download (`tfds build {name} --manual_dir DIR`). {remedy}"
        )
    offline = _unreachable(TFDS_HOST)
    if offline:
        raise BadInput(f"{where} and cannot be downloaded ({offline}). {remedy}")
    try:
        builder.download_and_prepare()
    except _tfds_errors() as error:
        raise BadInput(
            f"{where}, and downloading and preparing it failed "
            f"({_first_line(error)}). {remedy}"
        ) from error


def _load_tfds(name, split, data_dir, labels=False):
    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared():
        _prepare(builder, name)
    tfds_split = "train" if split == "train" else "test"
    if tfds_split not in builder.info.splits:
        raise BadInput(
            f"--dataset {name}: expected a {tfds_split!r} split for --split "
            f"{split}; it has {sorted(builder.info.splits)}."
        )
    if "image" not in builder.info.features:
        raise BadInput(
            f"--dataset {name}: expected an 'image' feature; it has "
            f"{sorted(builder.info.features)}."
        )
    dataset = builder.as_dataset(split=tfds_split, shuffle_files=split == "train")
    if labels:
        return dataset.map(
            lambda example: (_rgb_image(example), tf.cast(example["label"], tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.map(_rgb_image, num_parallel_calls=tf.data.AUTOTUNE)


def _unreachable(host):
    """A reason string when `host` does not resolve, else `None`."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"{host} does not resolve: {error}"
    return None


def _rgb_image(example):
    image = example["image"]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image[..., :3]


def _resizer(size):
    def resize(image):
        if image.shape[0] == size and image.shape[1] == size:
            return image
        resized = tf.image.resize(image, (size, size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    return resize


def _augmenter(size, seed):
    def augment(image):
        padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
        cropped = tf.image.random_crop(padded, (size, size, 3), seed=seed)
        return tf.image.random_flip_left_right(cropped, seed=seed)

    return augment


def count_images(batches):
    """The number of images in a batched dataset, or `None` if unknown.

    tf.data cannot tell it after `unbatch()`; a dataset of known length gives
    it from its batch count and the size of its last batch.
    """
    num_batches = int(batches.cardinality())
    if num_batches == 0:
        return 0
    if num_batches < 0:
        return None
    first = next(iter(batches.take(1)))
    last = next(iter(batches.skip(num_batches - 1)))
    first, last = (images_of(batch) for batch in (first, last))
    return (num_batches - 1) * int(first.shape[0]) + int(last.shape[0])


def images_of(batch):
    """The images of a dataset element: the `"image"` of a tfds dict, the
    first of an `(images, labels)` pair, or the element itself."""
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch
