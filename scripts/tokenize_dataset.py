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
running is refused (`run.lock`). The work is
`keras_dvq.export.token_dataset.tokenize_dataset`; the shards are written by
`keras_dvq.data.token_shards.TokenShardWriter`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_dvq.export.token_dataset import tokenize_dataset  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Write token shards of an image dataset (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .keras file written by scripts/train.py")
    source.add_argument("--tokenizer", help="a SavedModel from export_tokenizer.py")
    parser.add_argument("--dataset", required=True, help="sample | folder:PATH | tfds")
    parser.add_argument("--split", choices=["train", "validation"], default="train")
    parser.add_argument("--data_dir", default=None, help="tensorflow-datasets dir")
    parser.add_argument(
        "--image_size",
        type=cli.positive_int,
        default=None,
        help="side of the images (default: the size the model was trained at, "
        "or the export serves; 32 for models older than that record); another "
        "size divisible by the stride gives other token grids",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", choices=["npy", "tfrecord"], default="npy")
    parser.add_argument("--shard_size", type=cli.positive_int, default=10000)
    parser.add_argument("--batch_size", type=cli.positive_int, default=128)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def tokenize(args):
    return tokenize_dataset(
        args.out,
        args.dataset,
        args.split,
        model=args.model,
        tokenizer=args.tokenizer,
        data_dir=args.data_dir,
        image_size=args.image_size,
        file_format=args.format,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        verbose=0 if args.quiet else "auto",
    )


def main(argv=None):
    return cli.run("tokenize_dataset.py", parse_args, tokenize, argv)


if __name__ == "__main__":
    sys.exit(main())
