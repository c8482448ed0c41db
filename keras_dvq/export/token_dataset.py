"""A dataset split through a trained tokenizer into token shards.

`tokenize_dataset(out, "sample", model="runs/demo/model.keras")` streams the
split in order (no shuffle, no augmentation, the last partial batch too)
through a `.keras` model or an exported tokenizer and writes the shards of
`keras_dvq.data.token_shards` into `out`: class labels where the dataset has
them, the source model's path and SHA-256 in the metadata. A run holds
`out`'s lock, and a re-run with the same arguments continues an interrupted
one after its last complete shard. `scripts/tokenize_dataset.py` is its
command line.

It sits in `export/`, above `data/`: a trained tokenizer put to use on a
dataset, like the SavedModel export beside it.
"""

import contextlib
import hashlib
import os
import sys

import keras

from keras_dvq.data.datasets import class_names
from keras_dvq.data.datasets import count_images
from keras_dvq.data.datasets import load_dataset
from keras_dvq.data.token_shards import TokenShardWriter
from keras_dvq.export.tokenizers import load_tokenizer
from keras_dvq.utils import atomic
from keras_dvq.utils.divergence import check_finite_model
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.run_directory import DirectoryInUse
from keras_dvq.utils.run_directory import RunLock
from keras_dvq.utils.validation import check_positive_int

# The size of models saved before they recorded theirs (all were 32 px).
DEFAULT_IMAGE_SIZE = 32


def tokenize_dataset(
    out,
    dataset,
    split="train",
    *,
    model=None,
    tokenizer=None,
    data_dir=None,
    image_size=None,
    file_format="npy",
    shard_size=10000,
    batch_size=128,
    verbose="auto",
):
    """Writes the token shards of a dataset split into `out`.

    Args:
        out: the shard directory.
        dataset: `"sample"`, `"folder:PATH"` or a tensorflow-datasets name.
        split: `"train"` or `"validation"`.
        model: a `.keras` file holding a trained `VQVAE` (or pass
            `tokenizer`).
        tokenizer: a SavedModel directory of `export_tokenizer` (or pass
            `model`).
        data_dir: tensorflow-datasets' data directory, or `None`.
        image_size: int or `None`. Side of the images tokenized; `None`:
            the size the model was trained at (or an export serves), else
            32 (models saved before the size was recorded). Another size
            divisible by the stride is allowed (the networks are fully
            convolutional: it gives larger or smaller token grids).
        file_format: `"npy"` or `"tfrecord"`.
        shard_size: int. Images per shard.
        batch_size: int. Images per encoder call.
        verbose: `"auto"` (a progress bar on a terminal, a line per shard
            otherwise), 0, 1 or 2, as Keras' `Progbar`.

    Returns:
        The metadata written to `out/metadata.json`.

    Raises:
        BadInput: for a missing or unusable model or tokenizer, a dataset
            that cannot be loaded, an `out` in use by another run or holding
            another run's tokens, or a split without images.

    Example:

    ```python
    metadata = tokenize_dataset(
        "tokens/sample-train", "sample", model="runs/demo/model.keras"
    )
    metadata["num_images"], metadata["token_shape"]   # 20866, [8, 8]
    ```
    """
    check_positive_int("shard_size", shard_size)
    check_positive_int("batch_size", batch_size)
    opened = _open_tokenizer(model, tokenizer)
    if image_size is None:
        image_size = default_image_size(opened)
    check_positive_int("image_size", image_size)
    if image_size % opened.stride:
        raise BadInput(
            f"--image_size {image_size}: the tokenizer downsamples by "
            f"{opened.stride}, which must divide the image size."
        )
    with contextlib.ExitStack() as stack:
        # One run per `out`: a second one would interleave shards and metadata.
        try:
            stack.enter_context(RunLock(out))
        except DirectoryInUse as error:
            raise BadInput(f"--out {error}") from error
        atomic.remove_temporaries(out)
        return _tokenize(
            opened, out, dataset, split, data_dir, image_size, file_format,
            shard_size, batch_size, verbose,
        )  # fmt: skip


def default_image_size(tokenizer):
    """The image size to run `tokenizer` at when none is given: the one it
    was trained at or is served at, else `DEFAULT_IMAGE_SIZE`."""
    return tokenizer.image_size or DEFAULT_IMAGE_SIZE


def _tokenize(
    tokenizer, out, dataset, split, data_dir, image_size, file_format, shard_size,
    batch_size, verbose,
):  # fmt: skip
    names = class_names(dataset, data_dir)
    settings = {
        "dataset": dataset,
        "split": split,
        "image_size": image_size,
        "shard_size": shard_size,
        "source": {
            "kind": tokenizer.kind,
            "path": os.path.abspath(tokenizer.path),
            "sha256": fingerprint(tokenizer.path),
        },
    }
    writer = TokenShardWriter(
        out,
        tokenizer.vocabulary_size,
        file_format,
        names,
        settings,
        # Directories begun before --image_size existed tokenized 32-px images.
        implied_settings={"image_size": DEFAULT_IMAGE_SIZE},
    )
    if writer.complete:
        print(f"{out}: already complete ({writer.num_images} images).")
        return writer.metadata
    images = load_dataset(
        dataset,
        split,
        batch_size=batch_size,
        image_size=image_size,
        data_dir=data_dir,
        shuffle=False,
        augment=False,
        drop_remainder=False,  # every image, the last partial batch too
        labels=names is not None,
    )
    if writer.num_images:
        print(f"{out}: continuing after {writer.num_shards} shard(s).")
    total = count_images(images)
    images = images.unbatch().skip(writer.num_images).batch(shard_size)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    progress = keras.utils.Progbar(total, verbose=verbose, unit_name="image")
    progress.update(writer.num_images)
    for batch in images.as_numpy_iterator():
        shard_images, labels = batch if names is not None else (batch, None)
        writer.write(tokenizer.encode(shard_images, batch_size), labels)
        progress.update(writer.num_images)
    if not writer.num_images:
        raise BadInput(
            f"--dataset {dataset} --split {split}: expected images, found none."
        )
    metadata = writer.finish()
    print(
        f"wrote {out}: {metadata['num_images']} images in "
        f"{len(metadata['shards'])} shard(s), token grid "
        f"{tuple(metadata['token_shape'])}, vocabulary {metadata['vocabulary_size']}"
    )
    return metadata


def _open_tokenizer(model, tokenizer):
    if (model is None) == (tokenizer is None):
        raise ValueError(
            "Pass one of `model` (a .keras file) or `tokenizer` (an export "
            f"directory). Received: model={model}, tokenizer={tokenizer}"
        )
    flag, path = ("--model", model) if model is not None else ("--tokenizer", tokenizer)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadInput(f"{flag} {path}: not found.")
    if model is not None and os.path.isdir(path):
        raise BadInput(
            f"--model {path}: expected a .keras file, got a directory; pass "
            "exports as --tokenizer."
        )
    if tokenizer is not None and not os.path.isdir(path):
        raise BadInput(
            f"--tokenizer {path}: expected an export directory, got a file; pass "
            ".keras files as --model."
        )
    try:
        opened = load_tokenizer(path)
    except BadInput as error:
        raise BadInput(f"{flag} {error}") from error
    if model is not None:  # exports are refused non-finite when written
        check_finite_model(opened.model, f"--model {path}")
    return opened


def fingerprint(path):
    """SHA-256 of a `.keras` file or of a SavedModel's graph and weights."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        files = ["saved_model.pb", "variables/variables.index"]
        files += sorted(
            os.path.join("variables", name)
            for name in os.listdir(os.path.join(path, "variables"))
            if name.startswith("variables.data")
        )
        paths = [os.path.join(path, name) for name in files]
    else:
        paths = [path]
    for file_path in paths:
        with open(file_path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
