"""Turns an image dataset into token shards for sequence models.

    python scripts/tokenize_dataset.py --model runs/demo/model.keras \\
        --dataset sample --split train --out tokens/sample-train

streams the split (in order, no augmentation) through a trained model
(`--model MODEL.keras`) or an exported tokenizer (`--tokenizer EXPORT_DIR`)
and writes into --out:

- `tokens-00000.npy`, ...: arrays `(count, h, w)` of token ids, uint16 when
  the vocabulary fits (else int32), image `i` of the split in row
  `i % shard_size` of shard `i // shard_size`; or with `--format tfrecord`,
  `tokens-00000.tfrecord`, ...: one `tf.train.Example` per image with an
  int64 feature `"tokens"` of the `h * w` ids in row-major order.
- Where the dataset has classes (`sample`: its photographs; tfds datasets
  with a `"label"` feature): `labels-00000.npy`, ... (int32 `(count,)`) beside
  the npy shards, or an int64 feature `"label"` in each TFRecord example.
- `metadata.json`: format, dtype, token grid shape, vocabulary size, source
  model (path and SHA-256), dataset, split, the shards with their counts (and
  `labels_file`), the number of images, whether the run is complete, and
  `labels` (bool) with `num_classes` and `class_names` where it is true.

The metadata is rewritten after every shard, so an interrupted run continues
from its last complete shard when re-run with the same arguments. Shards and
metadata are written under temporary names and renamed into place (a kill
never leaves a torn file), and a second run into the same --out while one is
running is refused (`run.lock`).
"""

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_dvq.data.datasets import class_names  # noqa: E402
from keras_dvq.data.datasets import count_images  # noqa: E402
from keras_dvq.data.datasets import load_dataset  # noqa: E402
from keras_dvq.export.tokenizers import load_tokenizer  # noqa: E402
from keras_dvq.training.run_directory import RunLock  # noqa: E402
from keras_dvq.utils import atomic  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.divergence import check_finite_model  # noqa: E402

METADATA = "metadata.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Write token shards of an image dataset (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .keras file written by scripts/train.py")
    source.add_argument("--tokenizer", help="a SavedModel from export_tokenizer.py")
    parser.add_argument("--dataset", required=True, help="sample | folder:PATH | tfds")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets dir")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", choices=["npy", "tfrecord"], default="npy")
    parser.add_argument("--shard_size", type=positive_int, default=10000)
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def open_tokenizer(args):
    path = args.model or args.tokenizer
    if not os.path.exists(path):
        raise ValueError(
            f"--{'model' if args.model else 'tokenizer'} {path}: not found."
        )
    if args.model and os.path.isdir(path):
        raise ValueError(f"--model {path}: a directory; pass exports as --tokenizer.")
    if args.tokenizer and not os.path.isdir(path):
        raise ValueError(
            f"--tokenizer {path}: not a directory; pass .keras as --model."
        )
    tokenizer = load_tokenizer(path)
    if args.model:  # exports are refused non-finite when written
        check_finite_model(tokenizer.model, f"--model {path}")
    return tokenizer


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


def run_settings(args, path, names):
    """What must match for a re-run to continue an earlier one (`path`: the
    tokenizer's file or export directory; `names`: the dataset's classes)."""
    return {
        "labels": names is not None,
        "format": args.format,
        "dataset": args.dataset,
        "split": args.split,
        "shard_size": args.shard_size,
        "source": {
            "kind": "keras" if args.model else "saved_model",
            "path": os.path.abspath(path),
            "sha256": fingerprint(path),
        },
    }


def read_metadata(out, settings):
    """The metadata of an earlier run into `out` with the same settings, or a
    fresh one; an earlier run with other settings is an error."""
    path = os.path.join(out, METADATA)
    if not os.path.exists(path):
        return {**settings, "shards": [], "num_images": 0, "complete": False}
    with open(path) as file:
        metadata = json.load(file)
    differing = sorted(key for key in settings if metadata.get(key) != settings[key])
    if differing:
        raise ValueError(
            f"--out {out} holds tokens of another run (different "
            f"{', '.join(differing)}); choose another --out."
        )
    return metadata


def write_npy(path, array):
    with open(path, "wb") as file:
        np.save(file, array)


def write_shard(path, tokens, file_format, labels=None):
    """A token shard; `labels` go into TFRecord examples (npy shards have
    their labels in a file of their own)."""
    if file_format == "npy":
        write_npy(path, tokens)
        return
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


def save_metadata(out, metadata):
    atomic.write_text(os.path.join(out, METADATA), json.dumps(metadata, indent=2))


def tokenize(args):
    tokenizer = open_tokenizer(args)
    # One run per --out: a second one would interleave shards and metadata.
    with RunLock(args.out):
        atomic.remove_temporaries(args.out)
        return _tokenize(args, tokenizer)


def _tokenize(args, tokenizer):
    names = class_names(args.dataset, args.data_dir)
    metadata = read_metadata(args.out, run_settings(args, tokenizer.path, names))
    if metadata["complete"]:
        print(f"{args.out}: already complete ({metadata['num_images']} images).")
        return metadata
    images = load_dataset(
        args.dataset,
        args.split,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        shuffle=False,
        augment=False,
        drop_remainder=False,  # every image, the last partial batch too
        labels=names is not None,
    )
    done = metadata["num_images"]
    if done:
        print(f"{args.out}: continuing after {len(metadata['shards'])} shard(s).")
    dtype = np.uint16 if tokenizer.vocabulary_size <= 1 << 16 else np.int32
    metadata.update(
        dtype=np.dtype(dtype).name if args.format == "npy" else "int64",
        vocabulary_size=tokenizer.vocabulary_size,
    )
    if names is not None:
        metadata.update(num_classes=len(names), class_names=names)
    total = count_images(images)
    images = images.unbatch().skip(done).batch(args.shard_size)
    os.makedirs(args.out, exist_ok=True)
    progress = keras.utils.Progbar(
        total,
        verbose=0 if args.quiet else 1 if sys.stdout.isatty() else 2,
        unit_name="image",
    )
    progress.update(done)
    for batch in images.as_numpy_iterator():
        shard_images, labels = batch if names is not None else (batch, None)
        tokens = tokenizer.encode(shard_images, args.batch_size).astype(dtype)
        number = len(metadata["shards"])
        name = f"tokens-{number:05d}.{args.format}"
        shard = {"file": name, "count": len(tokens)}
        if args.format == "npy" and labels is not None:
            shard["labels_file"] = f"labels-{number:05d}.npy"
            labels_path = os.path.join(args.out, shard["labels_file"])
            with atomic.atomic_path(labels_path) as temporary:
                write_npy(temporary, labels.astype(np.int32))
            labels = None
        with atomic.atomic_path(os.path.join(args.out, name)) as temporary:
            write_shard(temporary, tokens, args.format, labels)
        metadata["shards"].append(shard)
        metadata["num_images"] += len(tokens)
        metadata["token_shape"] = list(tokens.shape[1:])
        save_metadata(args.out, metadata)
        progress.update(metadata["num_images"])
    if not metadata["num_images"]:
        raise ValueError(f"--dataset {args.dataset} --split {args.split}: no images.")
    metadata["complete"] = True
    save_metadata(args.out, metadata)
    print(
        f"wrote {args.out}: {metadata['num_images']} images in "
        f"{len(metadata['shards'])} shard(s), token grid "
        f"{tuple(metadata['token_shape'])}, vocabulary {metadata['vocabulary_size']}"
    )
    return metadata


def main(argv=None):
    args = parse_args(argv)
    try:
        tokenize(args)
    except ValueError as error:
        print(f"tokenize_dataset.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
