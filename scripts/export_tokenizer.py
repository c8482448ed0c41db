"""Exports a trained model's tokenizer as a SavedModel in TF Serving's layout.

    python scripts/export_tokenizer.py runs/demo/model.keras exports/tokenizer

writes `exports/tokenizer/<version>/saved_model.pb` (the next free version,
or `--version`) with the signatures `encode` (= `serving_default`) and
`decode`, then prints them. Models trained on any Keras backend export the
same way: this script always runs on the TensorFlow backend.
"""

import argparse
import os
import sys

# SavedModels are TensorFlow artifacts, whatever backend trained the model.
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from keras_dvq.export.saved_model import MAX_IMAGE_SIZE  # noqa: E402
from keras_dvq.export.saved_model import export_tokenizer  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.divergence import check_finite_model  # noqa: E402
from keras_dvq.utils.errors import BadInput  # noqa: E402
from keras_dvq.utils.loading import load_model_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Export a keras-dvq tokenizer for TF Serving.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="a .keras file written by scripts/train.py")
    parser.add_argument("out_dir", help="TF Serving model base directory")
    parser.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="version subdirectory (default: one above the highest present)",
    )
    parser.add_argument(
        "--image_shape",
        type=image_shape,
        default=None,
        help="H,W,C of served images; H and W may be 'none' for any size "
        "divisible by the stride (default: S,S,C at the size S the model was "
        "trained at; none,none,C for models saved before they recorded it)",
    )
    parser.add_argument(
        "--max_image_size",
        type=max_image_size,
        default=MAX_IMAGE_SIZE,
        help="largest height and width a request may have, so that one "
        "oversized request cannot exhaust the server's memory; 'none': no limit",
    )
    return parser.parse_args(argv)


def max_image_size(text):
    if text.lower() == "none":
        return None
    return positive_int(text)


def image_shape(text):
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected H,W,C, got {text!r}")
    try:
        return tuple(None if part.lower() == "none" else int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected H,W,C integers, got {text!r}"
        ) from None


def next_version(out_dir):
    versions = [int(name) for name in os.listdir(out_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def describe_signatures(path):
    """Lines naming each signature's inputs and outputs (dtype, shape)."""
    loaded = tf.saved_model.load(path)
    lines = []
    for name, function in sorted(loaded.signatures.items()):
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        lines.append(
            f"  {name}: "
            + ", ".join(_describe(key, spec) for key, spec in sorted(inputs.items()))
            + " -> "
            + ", ".join(_describe(key, spec) for key, spec in sorted(outputs.items()))
        )
    return lines


def _describe(name, spec):
    shape = tuple(spec.shape.as_list())
    return f"{name} {spec.dtype.name} {shape}"


def export(args):
    model = load_model_file(args.model, "MODEL")
    check_finite_model(model, f"MODEL {args.model!r}")
    os.makedirs(args.out_dir, exist_ok=True)
    version = args.version or next_version(args.out_dir)
    path = os.path.join(args.out_dir, str(version))
    if os.path.exists(path):
        raise BadInput(
            f"--version {version}: {path} exists; exports are never overwritten."
        )
    image_shape = args.image_shape
    if image_shape is None and getattr(model, "image_size", None):
        # Served at the size it was trained at; --image_shape may say otherwise
        # (the network is fully convolutional).
        size = model.image_size
        image_shape = (size, size, model.image_channels)
    export_tokenizer(
        model, path, image_shape=image_shape, max_image_size=args.max_image_size
    )
    print(f"wrote {path}")
    print("\n".join(describe_signatures(path)))
    return path


def main(argv=None):
    return cli.run("export_tokenizer.py", parse_args, export, argv)


if __name__ == "__main__":
    sys.exit(main())
