"""Image datasets as tf.data pipelines (TensorFlow-specific by nature).

`load_dataset(name, split)` gives batches of uint8 images `(B, S, S, 3)` for:
- `"sample"`: the bundled patches of scikit-image's photographs;
- `"folder:PATH"`: a user's own images under PATH (recursive);
- any tensorflow-datasets image dataset by name, e.g. `"cifar10"`, with the
  `"train"` split for training and `"test"` for validation.

Training splits get a shuffle per epoch and an augmentation: the original
repo's (reflect-pad 4, random crop back to the image size, horizontal flip)
for `sample` and tfds images stored at the image size; for folders and tfds
images of other sizes, a random square crop of the image resized to a
shorter side of 1.0-1.15 times the image size, and a horizontal flip.
Validation splits get no shuffle, and folders and tfds images of other sizes
a centre crop of the image resized to the image size (never squashed).

Folders stream: the sorted file list is split and listed once (that gives the
batches per epoch), and tf.data reads, decodes and resizes the files in
parallel, so memory does not grow with the folder. Under multi-worker
training (`TF_CONFIG` naming several workers), each worker reads its own
shard of the files. With `labels=True` the elements are
`(images, class_ids)` pairs; `class_names(name)` tells which datasets have
classes and what they are called.
"""

import json
import os
import socket
import warnings

import tensorflow as tf

from keras_dvq.data.sample import PATCH_SIZES
from keras_dvq.data.sample import PHOTOGRAPHS
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
FOLDER_VALIDATION_EVERY = 10  # every 10th file (sorted) of a folder validates
PAD = 4
# A training crop comes from the image resized to a shorter side of 1.0-1.15
# times the image size: a random crop of mostly the whole picture.
CROP_SCALE = (1.0, 1.15)
SHUFFLE_BUFFER = 10_000  # the tfds default: bounded, the split size if smaller
# ... and at most this many bytes of images: 5,461 images at 256 px, not 2 GB.
SHUFFLE_BUFFER_BYTES = 2**30
# The first bytes of every format `tf.io.decode_image` decodes.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
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
    shuffle_buffer=None,
):
    """Returns a batched, prefetched `tf.data.Dataset` of uint8 images.

    Args:
        name: `"sample"`, `"folder:PATH"` or a tensorflow-datasets name.
        split: `"train"` or `"validation"` (for tfds, the `"test"` split).
        batch_size: int. Images per batch.
        image_size: int. Side of the square images; folder images, and tfds
            images stored at another size, are resized (shorter side) and
            cropped; `sample` cuts patches of this size (16 to 256).
        data_dir: directory of tensorflow-datasets data (tfds' default if
            `None`).
        shuffle: bool. Reshuffle every epoch. Defaults to `split == "train"`.
        augment: bool. Training augmentation (see the module docstring).
            Defaults to `split == "train"`.
        seed: int or `None`. Seed of shuffling and augmentation.
        drop_remainder: bool. Drop a last partial batch. Defaults to
            `split == "train"` (a fixed batch shape compiles once).
        labels: bool. Batches of `(images, class_ids)` (int32 ids) instead
            of images; only for datasets where `class_names(name)` is not
            `None`.
        shuffle_buffer: int or `None`. Elements in the shuffle buffer of a
            tfds dataset or `sample`; `None`: for tfds 10,000, fewer where
            that would exceed 1 GiB of images (5,461 at 256 px), the split
            size if smaller; the whole split for `sample`. Folders shuffle their
            whole file list (names only, never images).

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
    if shuffle_buffer is not None:
        check_positive_int("shuffle_buffer", shuffle_buffer)

    if labels and class_names(name, data_dir) is None:
        raise BadInput(
            f"--dataset {name}: has no class labels; labels=True expects "
            "'sample' or a tensorflow-datasets dataset with a 'label' class "
            "feature."
        )
    options = tf.data.Options()
    if name.startswith("folder:"):
        worker = worker_shard()
        files = folder_files(name[len("folder:") :], split, worker)
        dataset = _folder_dataset(files, image_size, shuffle, augment, seed)
        dataset = _counting_failures(dataset, len(files), image_size, name, split)
        if worker[0] > 1:
            # Each worker reads its own files (`folder_files`); tf.data's
            # automatic sharding would shard them again. Only then: on one
            # machine, OFF splits a last partial batch of 4 over two
            # replicas as 4 and 0 instead of 2 and 2.
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF
            )
    else:
        if name == "sample":
            dataset = _sample_dataset(split, image_size, labels)
            size = int(dataset.cardinality())
            default_buffer = size
        else:
            dataset = _load_tfds(name, split, data_dir, labels)
            stored = images_of(dataset.element_spec).shape[:2]
            # Images stored at another size are resized by their shorter side
            # and cropped (randomly with a flip for training, as folders),
            # never squashed; those stored at the size get today's padded crop.
            if tuple(stored) != (image_size, image_size):
                if augment:
                    crop, augment = _random_crop(image_size, seed), False
                else:
                    crop = _centre_crop(image_size)
                dataset = dataset.map(
                    _on_images(crop, labels), num_parallel_calls=tf.data.AUTOTUNE
                )
            size = int(dataset.cardinality())
            default_buffer = min(
                SHUFFLE_BUFFER, SHUFFLE_BUFFER_BYTES // (3 * image_size**2)
            )
            if size > 0:
                default_buffer = min(size, default_buffer)
        if shuffle:
            buffer = shuffle_buffer or default_buffer
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
    # pipeline is as fast without it (docs/benchmarks.md); an AUTOTUNE map
    # still runs one call per core at once (2 of 2 on a 2-core machine).
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _sample_dataset(split, image_size, labels):
    if image_size not in PATCH_SIZES:
        raise BadInput(
            f"--dataset sample: --image_size {image_size} is not a patch size "
            "of the sample dataset; expected 16 to 256."
        )
    patches = load_sample_patches(split, return_labels=labels, patch_size=image_size)
    return tf.data.Dataset.from_tensor_slices(patches)


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


def folder_files(path, split="train", worker=None):
    """The image files of a folder's split, sorted, and this worker's share.

    Lists the files under `path` (recursive) with an image extension, sorted;
    every 10th validates, the others train. Files whose first bytes are not a
    jpeg, png, gif or bmp signature are dropped here with one warning that
    counts them (a file that passes but fails to decode is skipped while
    reading, and each pass that skipped any warns with their number). Under
    multi-worker training, worker `i` of `n` keeps every `n`th readable file
    from the `i`th, all workers the same number (the split's `len // n`): a
    worker with one batch more than the others would wait for them forever
    in its last step.

    Args:
        path: str. The folder.
        split: `"train"` or `"validation"`.
        worker: `(num_workers, index)` or `None` for `worker_shard()`.

    Raises:
        BadInput: for a missing folder, or a split without a readable image.
    """
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
    readable = [file for file in in_split if _has_image_signature(file)]
    if len(readable) < len(in_split):
        warnings.warn(
            f"Skipped {len(in_split) - len(readable)} unreadable image file(s) "
            f"of {len(in_split)} in the {split} split of '{path}'.",
            stacklevel=3,
        )
    if not readable:
        raise BadInput(
            f"Dataset 'folder:{path}' has no readable {', '.join(IMAGE_EXTENSIONS)} "
            f"images in its {split} split ({len(files)} image files found; every "
            f"{FOLDER_VALIDATION_EVERY}th validates)."
        )
    num_workers, index = worker_shard() if worker is None else worker
    per_worker = len(readable) // num_workers
    if per_worker == 0:
        raise BadInput(
            f"Dataset 'folder:{path}' has {len(readable)} readable images in "
            f"its {split} split, fewer than the {num_workers} workers."
        )
    return readable[index::num_workers][:per_worker]


def worker_shard():
    """`(num_workers, index)` of this process under a `TF_CONFIG` cluster,
    in `MultiWorkerMirroredStrategy`'s order (the chief first); `(1, 0)`
    without one."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    chiefs = len(cluster.get("chief", ()))
    num_workers = chiefs + len(cluster.get("worker", ()))
    if num_workers <= 1:
        return 1, 0
    task = config.get("task", {})
    index = int(task.get("index", 0))
    if task.get("type") == "worker":
        index += chiefs
    return num_workers, index


def _has_image_signature(file):
    try:
        with open(file, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith(IMAGE_SIGNATURES)


def _folder_dataset(files, size, shuffle, augment, seed):
    """Streams `files` as `(image, False)` pairs of uint8 `(size, size, 3)`
    images (the flag marks a pass's end in `_counting_failures`)."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        # Names only: a full permutation costs a few bytes a file.
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    crop = _random_crop(size, seed) if augment else _centre_crop(size)
    dataset = dataset.map(
        lambda file: (crop(_decode(tf.io.read_file(file))), False),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # A file with an image signature that fails to decode is skipped.
    return dataset.ignore_errors()


def _counting_failures(images, count, size, name, split):
    """`images` (a pass over `count` files, some skipped) made exactly
    `count` long: the next pass's first images take the place of skipped
    ones, so every pass has the listed length, which Keras needs (its batches
    per epoch), and a corrupt file cannot end the run. A pass that skipped
    files warns once with their number."""
    end = tf.data.Dataset.from_tensors((tf.zeros((size, size, 3), tf.uint8), True))

    def warn(skipped):
        warnings.warn(
            f"Skipped {int(skipped)} image file(s) of {count} that failed to "
            f"decode in a pass over the {split} split of '{name}'.",
            stacklevel=1,
        )
        return True

    def tally(seen, element):
        image, last = element
        # At the end marker, once a pass: the host says how many failed.
        reported = tf.cond(
            tf.logical_and(last, seen < count),
            lambda: tf.py_function(warn, [count - seen], tf.bool),
            lambda: tf.constant(True),
        )
        with tf.control_dependencies([reported]):
            seen += tf.cast(tf.logical_not(last), tf.int64)
        return seen, element

    marked = images.concatenate(end).scan(tf.constant(0, tf.int64), tally)
    images = marked.filter(lambda image, last: tf.logical_not(last))
    return images.map(lambda image, last: image).repeat().take(count)


def _decode(contents):
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def _resize_shorter_side(image, side, size):
    """`image` resized (bicubic, antialiased) so its shorter side is `side`
    (a float tensor), rounded and at least `size`; the longer side keeps the
    aspect ratio."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    new_shape = tf.cast(tf.round(shape * side / tf.reduce_min(shape)), tf.int32)
    new_shape = tf.maximum(new_shape, size)
    resized = tf.image.resize(image, new_shape, method="bicubic", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _centre_crop(size):
    def crop(image):
        image = _resize_shorter_side(image, tf.constant(float(size)), size)
        shape = tf.shape(image)
        top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
        # A static shape: tf.distribute pads an empty replica batch from it.
        return tf.ensure_shape(
            image[top : top + size, left : left + size], (size, size, 3)
        )

    return crop


def _random_crop(size, seed):
    # Three op seeds: one seed for all three would tie the flip to the scale.
    seeds = (None,) * 3 if seed is None else (seed, seed + 1, seed + 2)

    def crop(image):
        scale = tf.random.uniform((), *CROP_SCALE, seed=seeds[0])
        image = _resize_shorter_side(image, scale * size, size)
        image = tf.image.random_crop(image, (size, size, 3), seed=seeds[1])
        return tf.image.random_flip_left_right(image, seed=seeds[2])

    return crop


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


def _tfds_builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise BadInput(
            f"--dataset {name}: expected 'sample', 'folder:PATH' or a "
            f"tensorflow-datasets name; tensorflow-datasets has no {name!r} "
            f"({describe(error)})."
        ) from error
    except _tfds_errors() as error:
        raise BadInput(
            f"--dataset {name}: tensorflow-datasets knows it but cannot build "
            f"its builder ({describe(error)})."
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
            f"({describe(error)}). {remedy}"
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
