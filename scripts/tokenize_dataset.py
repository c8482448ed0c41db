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
- `metadata.json`: format, dtype, token grid shape, vocabulary size, source
  model (path and SHA-256), dataset, split, the shards with their counts, the
  number of images and whether the run is complete.

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

from keras_dvq import atomic  # noqa: E402
from keras_dvq.data import count_images  # noqa: E402
from keras_dvq.data import load_dataset  # noqa: E402
from keras_dvq.divergence import check_finite_model  # noqa: E402
from keras_dvq.recipe import positive_int  # noqa: E402
from keras_dvq.run_directory import RunLock  # noqa: E402
from keras_dvq.tokenizers import load_tokenizer  # noqa: E402

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


def run_settings(args, path):
    """What must match for a re-run to continue an earlier one (`path`: the
    tokenizer's file or export directory)."""
    return {
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


def write_shard(path, tokens, file_format):
    if file_format == "npy":
        with open(path, "wb") as file:
            np.save(file, tokens)
        return
    with tf.io.TFRecordWriter(path) as writer:
        for grid in tokens.reshape(len(tokens), -1):
            feature = tf.train.Feature(int64_list=tf.train.Int64List(value=grid))
            example = tf.train.Example(
                features=tf.train.Features(feature={"tokens": feature})
            )
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
    metadata = read_metadata(args.out, run_settings(args, tokenizer.path))
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
    )
    done = metadata["num_images"]
    if done:
        print(f"{args.out}: continuing after {len(metadata['shards'])} shard(s).")
    dtype = np.uint16 if tokenizer.vocabulary_size <= 1 << 16 else np.int32
    metadata.update(
        dtype=np.dtype(dtype).name if args.format == "npy" else "int64",
        vocabulary_size=tokenizer.vocabulary_size,
    )
    total = count_images(images)
    images = images.unbatch().skip(done).batch(args.shard_size)
    os.makedirs(args.out, exist_ok=True)
    progress = keras.utils.Progbar(
        total,
        verbose=0 if args.quiet else 1 if sys.stdout.isatty() else 2,
        unit_name="image",
    )
    progress.update(done)
    for shard_images in images.as_numpy_iterator():
        tokens = tokenizer.encode(shard_images, args.batch_size).astype(dtype)
        name = f"tokens-{len(metadata['shards']):05d}.{args.format}"
        with atomic.atomic_path(os.path.join(args.out, name)) as temporary:
            write_shard(temporary, tokens, args.format)
        metadata["shards"].append({"file": name, "count": len(tokens)})
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
