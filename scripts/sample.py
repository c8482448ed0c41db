"""Samples token grids from a trained prior and decodes them into images.

    python scripts/sample.py --prior runs/prior/prior.keras \\
        --tokenizer runs/vq/model.keras --num_images 16 --out runs/samples

draws `--num_images` grids from the prior (`--temperature`, `--top_k`,
`--class_id` for a class-conditional prior, `--seed`), decodes them with the
tokenizer (a `.keras` VQVAE of `scripts/train.py`, or a SavedModel directory
of `scripts/export_tokenizer.py`, through `keras_dvq.export.tokenizers`) and
writes into --out:

- `samples.png`: the images on a grid, enlarged with nearest-neighbour
  interpolation so that single pixels stay visible;
- `samples.npy`: the images, uint8 `(N, H, W, C)`;
- `sample_tokens.npy`: the token grids, int32 `(N, *token_shape)`;
- `sampling.json`: the settings and the sampling speed.

The same arguments and seed give the same images (on the same backend).
`--no_cache` samples without the key/value cache (for speed comparisons).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_dvq  # noqa: E402, F401  (registers the package's classes)
from keras_dvq.evaluation import plots  # noqa: E402
from keras_dvq.export.tokenizers import load_tokenizer  # noqa: E402
from keras_dvq.models import TokenPrior  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.atomic import save_array  # noqa: E402
from keras_dvq.utils.atomic import write_text  # noqa: E402
from keras_dvq.utils.cli import positive_float  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.errors import BadInput  # noqa: E402
from keras_dvq.utils.loading import load_model_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Sample images from a token prior (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--prior", required=True, help="prior.keras from train_prior.py")
    add("--tokenizer", required=True, help="a .keras VQVAE or an exported SavedModel")
    add("--num_images", type=positive_int, required=True)
    add("--out", required=True, help="output directory")
    add("--temperature", type=positive_float, default=1.0)
    add("--top_k", type=positive_int, default=None, help="default: all ids")
    add("--class_id", type=int, default=None, help="for a class-conditional prior")
    add("--seed", type=int, default=0)
    add("--no_cache", action="store_true", help="recompute every step in full")
    add(
        "--warmup",
        action="store_true",
        help="sample once untimed first, so the reported speed leaves out tracing",
    )
    return parser.parse_args(argv)


def load_prior(path):
    return load_model_file(path, "--prior", TokenPrior)


def load_decoder(path):
    try:
        return load_tokenizer(path)
    except BadInput as error:
        raise BadInput(f"--tokenizer {error}") from error


def token_grid(tokenizer):
    """The tokenizer's token grid `(h, w)`, or `None` where any size goes."""
    height, width = tokenizer.image_shape[:2]
    if height is None or width is None:
        return None
    return (height // tokenizer.stride, width // tokenizer.stride)


def check_compatible(prior, decoder, path):
    grid = prior.token_shape
    decoder_grid = token_grid(decoder)
    if (
        decoder.vocabulary_size != prior.vocabulary_size
        or len(grid) != 2
        or (decoder_grid is not None and decoder_grid != grid)
    ):
        decoder_grid = decoder_grid or "(any h, w)"
        raise BadInput(
            f"--tokenizer {path}: vocabulary {decoder.vocabulary_size} on grids "
            f"{decoder_grid} does not match the prior's (vocabulary "
            f"{prior.vocabulary_size}, grids {grid})."
        )


def check_class_id(prior, class_id):
    if prior.num_classes and class_id is None:
        raise BadInput(
            f"--class_id: the prior is conditioned on {prior.num_classes} "
            f"classes; pass an id in [0, {prior.num_classes})."
        )
    if class_id is None:
        return
    if not prior.num_classes:
        raise BadInput(
            f"--class_id {class_id}: the prior is unconditional (no classes)."
        )
    if not 0 <= class_id < prior.num_classes:
        raise BadInput(
            f"--class_id {class_id}: expected an id in [0, {prior.num_classes})."
        )


def sample(args):
    if args.num_images <= 0:
        raise BadInput(f"--num_images {args.num_images}: expected a positive int.")
    prior = load_prior(args.prior)
    check_class_id(prior, args.class_id)
    decoder = load_decoder(args.tokenizer)
    check_compatible(prior, decoder, args.tokenizer)
    os.makedirs(args.out, exist_ok=True)
    settings = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "class_id": args.class_id,
        "seed": args.seed,
        "use_cache": not args.no_cache,
    }
    if args.warmup:
        prior.generate(args.num_images, **settings)
    start = time.perf_counter()
    tokens = prior.generate(args.num_images, **settings)
    seconds = time.perf_counter() - start
    images = np.round(np.clip(decoder.decode(tokens), 0, 1) * 255).astype(np.uint8)
    save_array(os.path.join(args.out, "samples.npy"), images)
    save_array(os.path.join(args.out, "sample_tokens.npy"), tokens)
    title = (
        f"{args.num_images} samples, temperature {args.temperature:g}, "
        f"top-k {args.top_k or 'all'}, seed {args.seed}"
    )
    if args.class_id is not None:
        title += f", class {args.class_id}"
    plots.save_figure(
        plots.image_grid_figure(images / 255.0, title=title),
        os.path.join(args.out, "samples.png"),
    )
    report = {
        **{key: getattr(args, key) for key in ("prior", "tokenizer", "num_images")},
        **{key: getattr(args, key) for key in ("temperature", "top_k", "class_id")},
        "seed": args.seed,
        "cache": not args.no_cache,
        "warmup": args.warmup,
        "backend": keras.config.backend(),
        "seconds": seconds,
        "tokens_per_second": tokens.size / seconds,
        "images_per_second": len(tokens) / seconds,
    }
    write_text(
        os.path.join(args.out, "sampling.json"), json.dumps(report, indent=2) + "\n"
    )
    print(
        f"sampled {len(tokens)} grids of {prior.token_shape} in {seconds:.2f} s "
        f"({report['tokens_per_second']:.0f} tokens/s, "
        f"{report['images_per_second']:.2f} images/s, "
        f"{'cached' if report['cache'] else 'uncached'}, "
        f"{'after a warm-up call' if args.warmup else 'first call included'})"
    )
    print(f"wrote {args.out}: samples.png, samples.npy, sample_tokens.npy")
    return report


def main(argv=None):
    return cli.run("sample.py", parse_args, sample, argv)


if __name__ == "__main__":
    sys.exit(main())
