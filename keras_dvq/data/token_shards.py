"""Token shards: the files of `tokenize_dataset`, written and read back.

A shard directory holds `metadata.json` and `.npy` or `.tfrecord` shards
(docs/token_datasets.md describes the layout). `TokenShardWriter` writes
them one shard at a time, each file atomically and the metadata after every
shard, so an interrupted writer is continued by a new one with the same
settings; `write_token_shards` writes arrays in one call.
`load_token_shards(path)` checks the metadata (a finished run, the files it
lists, ids inside the vocabulary) and returns the token grids with their
class labels where the shards hold them. The TFRecord format needs
TensorFlow (imported only there); npy shards need NumPy alone.
"""

import dataclasses
import json
import os

import numpy as np

from keras_dvq.utils import atomic
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int

METADATA = "metadata.json"
FORMATS = ("npy", "tfrecord")


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


def shard_dtype(vocabulary_size, file_format="npy"):
    """The id dtype of shards: uint16 npy while the vocabulary fits, else
    int32; TFRecord features are always int64."""
    if file_format == "tfrecord":
        return "int64"
    return "uint16" if vocabulary_size <= 1 << 16 else "int32"


class TokenShardWriter:
    """Writes token grids into a shard directory, one shard per `write`.

    Each shard (and its labels file) is written under a temporary name and
    renamed into place, and `metadata.json` is rewritten after it, so a kill
    leaves the shards written so far and metadata that lists exactly them. A
    writer opened on a directory with the same `settings` continues after
    its last shard (`num_images` says how many are written); other settings
    are refused rather than overwritten. Hold a lock on `out` (e.g.
    `keras_dvq.utils.run_directory.RunLock`) where processes may race.

    Args:
        out: the shard directory (created if missing).
        vocabulary_size: int. Ids must be in `[0, vocabulary_size)`.
        file_format: `"npy"` (arrays `(count, *token_shape)`, labels in
            `labels-NNNNN.npy` files beside them) or `"tfrecord"` (one
            `tf.train.Example` per grid with int64 features `"tokens"` and,
            with labels, `"label"`).
        class_names: list of str in id order, or `None`. With names, every
            `write` takes the class ids of its grids.
        settings: dict of JSON values a continuing writer must share
            (dataset, split, source model, ...); kept in the metadata.
        name: the argument or flag that names `out` in errors.
        implied_settings: dict. Values of `settings` keys that directories
            written before the key existed held implicitly (e.g. an
            `image_size` of 32): such a directory continues where they
            match.

    Example:

    ```python
    writer = TokenShardWriter("tokens/demo", vocabulary_size=512)
    for grids in batches_of_token_grids:   # int arrays (count, 8, 8)
        writer.write(grids)
    writer.finish()
    load_token_shards("tokens/demo").tokens.shape   # (N, 8, 8)
    ```
    """

    def __init__(
        self,
        out,
        vocabulary_size,
        file_format="npy",
        class_names=None,
        settings=None,
        name="--out",
        implied_settings=None,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_choice("file_format", file_format, FORMATS)
        self.out = os.fspath(out)
        self.vocabulary_size = int(vocabulary_size)
        self.file_format = file_format
        self.class_names = None if class_names is None else list(class_names)
        self.dtype = shard_dtype(self.vocabulary_size, file_format)
        self.name = name
        self.implied_settings = dict(implied_settings or {})
        fixed = {
            **(settings or {}),
            "labels": self.class_names is not None,
            "format": file_format,
            "dtype": self.dtype,
            "vocabulary_size": self.vocabulary_size,
        }
        if self.class_names is not None:
            fixed.update(
                num_classes=len(self.class_names), class_names=self.class_names
            )
        self.metadata = self._earlier_metadata(fixed)

    @property
    def num_images(self):
        return self.metadata["num_images"]

    @property
    def num_shards(self):
        return len(self.metadata["shards"])

    @property
    def complete(self):
        return self.metadata["complete"]

    def write(self, tokens, labels=None):
        """Writes `tokens` (ints `(count, *token_shape)`) as the next shard,
        with `labels` (ints `(count,)`) exactly when there are class names."""
        if self.complete:
            raise ValueError(f"{self.out}: the shards are complete; nothing to add.")
        tokens = np.asarray(tokens)
        self._check(tokens, labels)
        number = self.num_shards
        shard = {
            "file": f"tokens-{number:05d}.{self.file_format}",
            "count": len(tokens),
        }
        os.makedirs(self.out, exist_ok=True)
        if self.file_format == "npy" and labels is not None:
            shard["labels_file"] = f"labels-{number:05d}.npy"
            with atomic.atomic_path(
                os.path.join(self.out, shard["labels_file"])
            ) as tmp:
                _write_npy(tmp, np.asarray(labels).astype(np.int32))
            labels = None  # npy labels live in their own file
        with atomic.atomic_path(os.path.join(self.out, shard["file"])) as temporary:
            write_shard_file(
                temporary, tokens.astype(self.dtype), self.file_format, labels
            )
        self.metadata["shards"].append(shard)
        self.metadata["num_images"] += len(tokens)
        self.metadata["token_shape"] = list(tokens.shape[1:])
        self._save()

    def finish(self):
        """Marks the shards complete (readers refuse incomplete ones)."""
        self.metadata["complete"] = True
        self._save()
        return self.metadata

    def _check(self, tokens, labels):
        if tokens.ndim < 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                "Argument `tokens` must be integer token grids (count, *token_shape)."
                f" Received: dtype={tokens.dtype}, shape={tokens.shape}"
            )
        shape = self.metadata.get("token_shape")
        if shape is not None and list(tokens.shape[1:]) != shape:
            raise ValueError(
                f"Argument `tokens` must be grids of {tuple(shape)} like the "
                f"earlier shards. Received: shape={tokens.shape}"
            )
        if tokens.size and not 0 <= tokens.min() <= tokens.max() < self.vocabulary_size:
            raise ValueError(
                f"Argument `tokens` must hold ids in [0, {self.vocabulary_size}). "
                f"Received: ids from {tokens.min()} to {tokens.max()}"
            )
        if (labels is None) != (self.class_names is None):
            raise ValueError(
                "Argument `labels` must be given exactly when the writer has "
                f"class names. Received: labels={'None' if labels is None else '...'}"
                f", class_names={self.class_names}"
            )
        if labels is not None and np.shape(labels) != (len(tokens),):
            raise ValueError(
                f"Argument `labels` must have shape ({len(tokens)},). "
                f"Received: shape={np.shape(labels)}"
            )

    def _earlier_metadata(self, fixed):
        path = os.path.join(self.out, METADATA)
        if not os.path.exists(path):
            return {**fixed, "shards": [], "num_images": 0, "complete": False}
        try:
            with open(path) as file:
                metadata = json.load(file)
        except (OSError, ValueError) as error:
            raise BadInput(
                f"{self.name} {self.out}: unreadable {METADATA} ({error}); expected "
                "token shards to continue, or choose another directory."
            ) from error
        # JSON turns tuples into lists: compare what was written with that.
        fixed = json.loads(json.dumps(fixed))
        # Settings that joined later held their implied value before.
        metadata = {**json.loads(json.dumps(self.implied_settings)), **metadata}
        differing = sorted(key for key in fixed if metadata.get(key) != fixed[key])
        if differing:
            raise BadInput(
                f"{self.name} {self.out} holds tokens of another run (different "
                f"{', '.join(differing)}); choose another {self.name}."
            )
        return metadata

    def _save(self):
        atomic.write_text(
            os.path.join(self.out, METADATA), json.dumps(self.metadata, indent=2)
        )


def write_token_shards(
    out,
    tokens,
    labels=None,
    *,
    vocabulary_size,
    class_names=None,
    file_format="npy",
    shard_size=10000,
    settings=None,
):
    """Writes the token grids `tokens` (with `labels`) as complete shards of
    `shard_size` grids; returns the metadata. See `TokenShardWriter`.

    Example:

    ```python
    write_token_shards("tokens/t", grids, vocabulary_size=512, shard_size=1000)
    ```
    """
    check_positive_int("shard_size", shard_size)
    if not len(tokens):
        raise ValueError("Argument `tokens` must hold at least one grid. Received: 0")
    writer = TokenShardWriter(
        out,
        vocabulary_size,
        file_format,
        class_names,
        {"shard_size": shard_size, **(settings or {})},
    )
    for start in range(writer.num_images, len(tokens), shard_size):
        part = None if labels is None else labels[start : start + shard_size]
        writer.write(tokens[start : start + shard_size], part)
    return writer.finish()


def write_shard_file(path, tokens, file_format, labels=None):
    """One shard file: an `.npy` array, or TFRecord examples with the flat
    grid as `"tokens"` and, given `labels`, the class id as `"label"`."""
    if file_format == "npy":
        _write_npy(path, tokens)
        return
    import tensorflow as tf  # TFRecord shards only

    with tf.io.TFRecordWriter(path) as writer:
        for index, grid in enumerate(tokens.reshape(len(tokens), -1)):
            feature = {
                "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=grid))
            }
            if labels is not None:
                feature["label"] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[labels[index]])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def _write_npy(path, array):
    # A file object: np.save on a name would append ".npy" to the temporary.
    with open(path, "wb") as file:
        np.save(file, array)


def read_metadata(path, name="path"):
    """The `metadata.json` of a shard directory; `name` is the argument (or
    flag) that errors name."""
    metadata_path = os.path.join(path, METADATA)
    if not os.path.isfile(metadata_path):
        raise BadInput(
            f"{name} {path}: not a token shard directory (expected {METADATA} "
            "written by scripts/tokenize_dataset.py)."
        )
    try:
        with open(metadata_path) as file:
            metadata = json.load(file)
        required = ("format", "shards", "num_images", "complete", "vocabulary_size")
        missing = [key for key in required if key not in metadata]
    except (OSError, ValueError) as error:
        raise BadInput(f"{name} {path}: unreadable {METADATA} ({error}).") from error
    if missing:
        raise BadInput(f"{name} {path}: {METADATA} lacks {', '.join(missing)}.")
    if not metadata["complete"]:
        raise BadInput(
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
        BadInput: for a missing or incomplete directory, missing shard
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
            raise BadInput(f"{name} {path}: shard {shard['file']} is missing.")
        if metadata["format"] == "npy":
            grids = np.load(file_path)
            if has_labels:
                labels_path = os.path.join(path, shard.get("labels_file", ""))
                if not os.path.isfile(labels_path):
                    raise BadInput(
                        f"{name} {path}: the labels of shard {shard['file']} "
                        "are missing."
                    )
                labels.append(np.load(labels_path))
        elif metadata["format"] == "tfrecord":
            grids, shard_labels = _read_tfrecord(file_path, token_shape, has_labels)
            labels.append(shard_labels)
        else:
            raise BadInput(
                f"{name} {path}: unknown shard format {metadata['format']!r} "
                "(expected 'npy' or 'tfrecord')."
            )
        if grids.shape != (shard["count"], *token_shape) or (
            has_labels and labels[-1].shape != (shard["count"],)
        ):
            raise BadInput(
                f"{name} {path}: shard {shard['file']} holds {grids.shape}, "
                f"metadata says {shard['count']} grids of {token_shape}."
            )
        tokens.append(grids.astype(np.int32))
    tokens = np.concatenate(tokens)
    vocabulary_size = int(metadata["vocabulary_size"])
    if tokens.size and not 0 <= tokens.min() <= tokens.max() < vocabulary_size:
        raise BadInput(
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
        raise BadInput(f"{name} {path}: class ids outside [0, {len(class_names)}).")
    return TokenShards(
        tokens=tokens,
        labels=labels,
        vocabulary_size=vocabulary_size,
        token_shape=token_shape,
        class_names=class_names,
        metadata=metadata,
    )


def check_same_tokens(shards, vocabulary_size, token_shape, name, reference):
    """Raises `BadInput` unless `shards` has `vocabulary_size` ids on grids
    of `token_shape`; `name` is the flag of the shards, `reference` what they
    are compared with (e.g. "the prior")."""
    if shards.vocabulary_size != vocabulary_size or tuple(shards.token_shape) != (
        tuple(token_shape)
    ):
        raise BadInput(
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
