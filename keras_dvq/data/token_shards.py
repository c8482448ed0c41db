"""Reading the token shards of `scripts/tokenize_dataset.py` back into memory.

A shard directory holds `metadata.json` and `.npy` or `.tfrecord` shards (see
the script's docstring). `load_token_shards(path)` checks the metadata (a
finished run, the files it lists, ids inside the vocabulary) and returns the
token grids with their class labels where the shards hold them. The TFRecord
path needs TensorFlow (imported only there); npy shards need NumPy alone.
"""

import dataclasses
import json
import os

import numpy as np

METADATA = "metadata.json"


@dataclasses.dataclass
class TokenShards:
    """Token grids of a shard directory, in the order of the split.

    Attributes:
        tokens: int32 array `(N, *token_shape)`.
        labels: int32 array `(N,)` of class ids, or `None`.
        vocabulary_size: int. Ids are in `[0, vocabulary_size)`.
        token_shape: tuple of ints, `(h, w)` (or `(h, w, depth)`).
        class_names: list of str (id order), or `None` without labels.
        metadata: the parsed `metadata.json`.
    """

    tokens: np.ndarray
    labels: np.ndarray | None
    vocabulary_size: int
    token_shape: tuple
    class_names: list | None
    metadata: dict

    @property
    def num_classes(self):
        return 0 if self.class_names is None else len(self.class_names)


def read_metadata(path, name="path"):
    """The `metadata.json` of a shard directory; `name` is the argument (or
    flag) that errors name."""
    metadata_path = os.path.join(path, METADATA)
    if not os.path.isfile(metadata_path):
        raise ValueError(
            f"{name} {path}: not a token shard directory (expected {METADATA} "
            "written by scripts/tokenize_dataset.py)."
        )
    try:
        with open(metadata_path) as file:
            metadata = json.load(file)
        required = ("format", "shards", "num_images", "complete", "vocabulary_size")
        missing = [key for key in required if key not in metadata]
    except (OSError, ValueError) as error:
        raise ValueError(f"{name} {path}: unreadable {METADATA} ({error}).") from error
    if missing:
        raise ValueError(f"{name} {path}: {METADATA} lacks {', '.join(missing)}.")
    if not metadata["complete"]:
        raise ValueError(
            f"{name} {path}: incomplete shards (complete: false, "
            f"{metadata['num_images']} images in {len(metadata['shards'])} "
            "shard(s)); re-run scripts/tokenize_dataset.py with the same "
            "arguments to finish them."
        )
    return metadata


def load_token_shards(path, name="path"):
    """Reads a complete shard directory into a `TokenShards`.

    Args:
        path: the `--out` directory of `scripts/tokenize_dataset.py`.
        name: the argument or flag named in errors, e.g. `"--tokens"`.

    Raises:
        ValueError: for a missing or incomplete directory, missing shard
            files, counts or shapes that disagree with the metadata, or ids
            outside `[0, vocabulary_size)`.

    Example:

    ```python
    shards = load_token_shards("tokens/sample-train")
    shards.tokens.shape      # (20866, 8, 8)
    shards.labels[:3]        # class ids, or None
    shards.class_names       # ["astronaut", "coffee", ...]
    ```
    """
    metadata = read_metadata(path, name)
    token_shape = tuple(metadata["token_shape"])
    has_labels = bool(metadata.get("labels"))
    tokens, labels = [], []
    for shard in metadata["shards"]:
        file_path = os.path.join(path, shard["file"])
        if not os.path.isfile(file_path):
            raise ValueError(f"{name} {path}: shard {shard['file']} is missing.")
        if metadata["format"] == "npy":
            grids = np.load(file_path)
            if has_labels:
                labels_path = os.path.join(path, shard.get("labels_file", ""))
                if not os.path.isfile(labels_path):
                    raise ValueError(
                        f"{name} {path}: the labels of shard {shard['file']} "
                        "are missing."
                    )
                labels.append(np.load(labels_path))
        elif metadata["format"] == "tfrecord":
            grids, shard_labels = _read_tfrecord(file_path, token_shape, has_labels)
            labels.append(shard_labels)
        else:
            raise ValueError(
                f"{name} {path}: unknown shard format {metadata['format']!r} "
                "(expected 'npy' or 'tfrecord')."
            )
        if grids.shape != (shard["count"], *token_shape) or (
            has_labels and labels[-1].shape != (shard["count"],)
        ):
            raise ValueError(
                f"{name} {path}: shard {shard['file']} holds {grids.shape}, "
                f"metadata says {shard['count']} grids of {token_shape}."
            )
        tokens.append(grids.astype(np.int32))
    tokens = np.concatenate(tokens)
    vocabulary_size = int(metadata["vocabulary_size"])
    if tokens.size and not 0 <= tokens.min() <= tokens.max() < vocabulary_size:
        raise ValueError(
            f"{name} {path}: ids from {tokens.min()} to {tokens.max()}, outside "
            f"the vocabulary [0, {vocabulary_size})."
        )
    class_names = metadata.get("class_names") if has_labels else None
    labels = np.concatenate(labels).astype(np.int32) if has_labels else None
    if (
        labels is not None
        and labels.size
        and not (0 <= labels.min() <= labels.max() < len(class_names))
    ):
        raise ValueError(f"{name} {path}: class ids outside [0, {len(class_names)}).")
    return TokenShards(
        tokens=tokens,
        labels=labels,
        vocabulary_size=vocabulary_size,
        token_shape=token_shape,
        class_names=class_names,
        metadata=metadata,
    )


def check_same_tokens(shards, vocabulary_size, token_shape, name, reference):
    """Raises `ValueError` unless `shards` has `vocabulary_size` ids on grids
    of `token_shape`; `name` is the flag of the shards, `reference` what they
    are compared with (e.g. "the prior")."""
    if shards.vocabulary_size != vocabulary_size or tuple(shards.token_shape) != (
        tuple(token_shape)
    ):
        raise ValueError(
            f"{name}: tokens of vocabulary {shards.vocabulary_size} on "
            f"{tuple(shards.token_shape)} grids do not match {reference} "
            f"(vocabulary {vocabulary_size}, grids {tuple(token_shape)})."
        )


def _read_tfrecord(file_path, token_shape, has_labels):
    # TensorFlow-only: the TFRecord shards are tf.train.Example records.
    import tensorflow as tf

    length = int(np.prod(token_shape))
    feature = {"tokens": tf.io.FixedLenFeature([length], tf.int64)}
    if has_labels:
        feature["label"] = tf.io.FixedLenFeature([1], tf.int64)
    records = tf.data.TFRecordDataset(file_path).batch(4096)
    grids, labels = [], []
    for batch in records:
        parsed = tf.io.parse_example(batch, feature)
        grids.append(parsed["tokens"].numpy().reshape(-1, *token_shape))
        if has_labels:
            labels.append(parsed["label"].numpy()[:, 0])
    grids = np.concatenate(grids) if grids else np.zeros((0, *token_shape), np.int64)
    return grids, np.concatenate(labels) if labels else np.zeros((0,), np.int64)
