"""Evaluates tokenizers the way their users compare them: distortion at a rate.

    python scripts/evaluate.py runs/vq/model.keras runs/gumbel/model.keras \\
        --dataset sample --out runs/eval

For every MODEL (a `.keras` file written by scripts/train.py, or a tokenizer
exported by scripts/export_tokenizer.py), tokenizes the whole split (in order,
no augmentation), decodes the tokens and measures against the originals:

- distortion: MSE, PSNR (the mean of per-image PSNRs, in dB; the PSNR of the
  split's mean MSE is in the JSON as `psnr_of_mean_mse`), SSIM (11x11
  Gaussian window, sigma 1.5), MS-SSIM (as many of its five scales as the
  image size allows: 2 at 32 px; the JSON says how many), GMSD (lower is
  better), the sharpness ratio (the reconstructions' Laplacian energy over
  the originals': < 1 is blur), and for `.keras` models their own
  `recon_loss` (the reconstruction NLL as train.py reports it);
- with trained weights only (`--vgg_weights` / `--lpips_weights`,
  `--inception_weights`; absent otherwise): LPIPS (VGG16) and rFID
  (InceptionV3 pool features of originals against reconstructions);
- rate and usage, from the code histogram of the whole split: codes used of
  the vocabulary, perplexity, bits per token (the histogram's entropy) and
  bits per image (bits per token x tokens per image);
- speed: images/s of encode + decode over the split, after a warm-up batch.

Each model runs at the image size it was trained at (an export: the size it
serves; models saved before the size was recorded: 32) unless --image_size
says otherwise; a size the model's stride does not divide is a one-line error.

Prints a table, one row per model, and writes into --out `evaluation.json`,
`reconstructions-<model>.png` per model and, for two or more models,
`rate_distortion.png` (PSNR against bits per image) and, where they share an
image size, `reconstructions.png` (the same images through each model, one
row each).
"""

import argparse
import json
import os
import re
import shlex
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dvq.data.datasets import count_images  # noqa: E402
from keras_dvq.data.datasets import load_dataset  # noqa: E402
from keras_dvq.evaluation import plots  # noqa: E402
from keras_dvq.evaluation.fid import MIN_INCEPTION_SIZE  # noqa: E402
from keras_dvq.evaluation.fid import load_inception  # noqa: E402
from keras_dvq.evaluation.lpips import MIN_SIZE as LPIPS_MIN_SIZE  # noqa: E402
from keras_dvq.evaluation.lpips import load_lpips  # noqa: E402
from keras_dvq.evaluation.measures import SplitEvaluation  # noqa: E402
from keras_dvq.evaluation.measures import to_unit_float  # noqa: E402
from keras_dvq.export.token_dataset import default_image_size  # noqa: E402
from keras_dvq.export.tokenizers import load_tokenizer  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402
from keras_dvq.utils.atomic import write_text  # noqa: E402
from keras_dvq.utils.cli import positive_int  # noqa: E402
from keras_dvq.utils.errors import BadInput  # noqa: E402

# Columns shown only when their network's weights were given (never faked).
OPTIONAL_COLUMNS = ("lpips", "rfid")
CHUNK_IMAGES = 4096  # images per encode/decode call (predict's set-up is per call)
RESULTS = "evaluation.json"
SIDE_BY_SIDE = "reconstructions.png"
# (heading, key, format) of the printed table.
COLUMNS = (
    ("MSE", "mse", "{:.5f}"),
    ("PSNR dB", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("MS-SSIM", "ms_ssim", "{:.4f}"),
    ("GMSD", "gmsd", "{:.4f}"),
    ("sharpness", "sharpness_ratio", "{:.3f}"),
    ("LPIPS", "lpips", "{:.4f}"),
    ("rFID", "rfid", "{:.2f}"),
    ("recon_loss", "recon_loss", "{:.4f}"),
    ("codes used", "codes", "{}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("bits/token", "bits_per_token", "{:.2f}"),
    ("bits/image", "bits_per_image", "{:.0f}"),
    ("images/s", "images_per_second", "{:,.0f}"),
)


def make_parser():
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate tokenizers: PSNR, SSIM, MS-SSIM, GMSD, sharpness, "
        "codebook usage and rate (keras-dvq).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("models", nargs="+", metavar="MODEL", help=".keras file or export dir")
    add("--dataset", required=True, help="sample | folder:PATH | a tfds name")
    add("--split", choices=["validation", "train"], default="validation")
    add("--data_dir", default=None, help="tensorflow-datasets data directory")
    add(
        "--image_size",
        type=positive_int,
        default=None,
        help="side of the images (default: each model's training size, or the "
        "size an export serves; 32 for models older than that record); another "
        "size divisible by the stride is allowed: the networks are fully "
        "convolutional",
    )
    add("--batch_size", type=positive_int, default=128)
    add("--out", default=None, help="output directory (default: print only)")
    add(
        "--vgg_weights",
        default=None,
        help="LPIPS backbone: torchvision's VGG16 state dict (.pth, the "
        "published LPIPS) or a Keras VGG16 without top (.h5, .weights.h5); "
        "with this flag or --lpips_weights the table gains LPIPS (missing "
        "files default to Keras' cached VGG16 and the installed lpips "
        "package's heads)",
    )
    add(
        "--lpips_weights",
        default=None,
        help="LPIPS linear heads: the lpips package's weights/v0.1/vgg.pth or "
        "an .npz of lin0..lin4",
    )
    add(
        "--inception_weights",
        default=None,
        help="Keras InceptionV3 without top (.h5, .weights.h5): the table gains rFID",
    )
    add(
        "--inception_size",
        type=positive_int,
        default=299,
        help="side images are resized to for InceptionV3 (at least 75)",
    )
    add("--num_shown", type=positive_int, default=16, help="images per grid")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def evaluate(args):
    tokenizers = [(path, load_tokenizer(path)) for path in args.models]
    for path, tokenizer in tokenizers:  # before anything is written
        image_size = args.image_size or default_image_size(tokenizer)
        if image_size % tokenizer.stride:
            raise BadInput(
                f"--image_size {image_size}: {path} downsamples by "
                f"{tokenizer.stride}, which must divide the image size."
            )
        if (args.vgg_weights or args.lpips_weights) and image_size < LPIPS_MIN_SIZE:
            raise BadInput(
                f"--image_size {image_size}: LPIPS needs images of at least "
                f"{LPIPS_MIN_SIZE} px ({path})."
            )
    networks = perceptual_networks(args)  # weights fail here, before any data
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    verbose = 0 if args.quiet else 1 if sys.stdout.isatty() else 2
    rows, shown_images = [], []
    for path, tokenizer in tokenizers:
        if verbose:
            print(f"evaluating {path}")
        row, shown = evaluate_tokenizer(tokenizer, args, verbose, networks)
        row = {"model": path, "label": label_of(path, args.models), **row}
        rows.append(row)
        shown_images.append(shown)
        if args.out:
            save_grid(row, shown, args.out)
    print(format_table(rows, args))
    if args.out:
        side_by_side = save_side_by_side(rows, shown_images, args)
        write_results(rows, args, networks, side_by_side)
    return rows


def perceptual_networks(args):
    """LPIPS and InceptionV3 with the weights the flags give, `None` for
    those without; a file that cannot be used is a `BadInput`."""
    networks = {"lpips": None, "inception": None}
    if args.vgg_weights or args.lpips_weights:
        networks["lpips"] = load_lpips(args.vgg_weights, args.lpips_weights)
    if args.inception_weights:
        if args.inception_size < MIN_INCEPTION_SIZE:
            raise BadInput(
                f"--inception_size {args.inception_size}: InceptionV3 takes at "
                f"least {MIN_INCEPTION_SIZE}."
            )
        networks["inception"] = load_inception(
            args.inception_weights, args.inception_size
        )
    return networks


def evaluate_tokenizer(tokenizer, args, verbose, networks=None):
    """The yardstick's row for one tokenizer, and the images of its grid."""
    split = SplitEvaluation(
        tokenizer.vocabulary_size, **(networks or {}), batch_size=args.batch_size
    )
    image_size = args.image_size or default_image_size(tokenizer)
    dataset = load_split(args, image_size)
    total = count_images(dataset)
    warm_up = next(iter(dataset.take(1).as_numpy_iterator()), None)
    if warm_up is None:
        raise BadInput(f"--dataset {args.dataset} --split {args.split}: no images.")
    run_tokenizer(tokenizer, warm_up, args)  # compiles for a full batch
    progress = keras.utils.Progbar(total, verbose=verbose, unit_name="image")
    seconds, shown = 0.0, None
    for images in dataset.unbatch().batch(CHUNK_IMAGES).as_numpy_iterator():
        start = time.perf_counter()
        tokens, reconstructions = run_tokenizer(tokenizer, images, args)
        seconds += time.perf_counter() - start
        split.update(images, reconstructions, tokens)
        if shown is None:  # the grid shows images spread over the first chunk
            picks = np.linspace(0, len(images) - 1, args.num_shown).astype(int)
            shown = (to_unit_float(images[picks]), reconstructions[picks])
        progress.add(len(images))
    row = split.result()
    row["codes"] = f"{row['codes_used']} / {row['vocabulary_size']}"
    row["images_per_second"] = row["num_images"] / seconds
    row["image_size"] = image_size
    row["recon_loss"] = own_recon_loss(tokenizer, args, image_size)
    row["backend"] = (
        keras.backend.backend()
        if tokenizer.kind == "keras"
        else ("tensorflow (SavedModel)")
    )
    return row, shown


def load_split(args, image_size):
    return load_dataset(
        args.dataset,
        args.split,
        batch_size=args.batch_size,
        image_size=image_size,
        data_dir=args.data_dir,
        shuffle=False,
        augment=False,
        drop_remainder=False,
    )


def run_tokenizer(tokenizer, images, args):
    """Tokens and float reconstructions of a chunk; a chunk the tokenizer
    cannot take (channels, size) is an error naming the dataset."""
    try:
        tokens = tokenizer.encode(images, batch_size=args.batch_size)
    except ValueError as error:  # the tokenizer's input checks: shape, channels
        raise BadInput(
            f"--dataset {args.dataset} (images {images.shape[1:]}) does not fit "
            f"{tokenizer.path}: {error}"
        ) from None
    return tokens, tokenizer.decode(tokens, batch_size=args.batch_size)


def own_recon_loss(tokenizer, args, image_size):
    """A `.keras` model's validation `recon_loss` (its reconstruction NLL,
    as train.py reports it); `None` for exports, which carry no likelihood."""
    model = getattr(tokenizer, "model", None)
    if model is None:
        return None
    model.compile()
    logs = model.evaluate(load_split(args, image_size), return_dict=True, verbose=0)
    return float(logs["recon_loss"])


def label_of(path, paths):
    """A short name of a model: its path without `.keras` and the common
    leading directories of all the evaluated paths."""
    names = [os.path.normpath(p).removesuffix(".keras") for p in paths]
    common = os.path.commonpath(names) if len(names) > 1 else ""
    name = os.path.normpath(path).removesuffix(".keras")
    if common and common != name:
        name = os.path.relpath(name, common)
    return name


def save_grid(row, shown, out):
    originals, reconstructions = shown
    figure = plots.comparison_figure(
        originals,
        reconstructions,
        title=f"{row['label']}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
        f"{row['bits_per_token']:.2f} bits/token, {row['codes']} codes used",
    )
    row["reconstructions_png"] = f"reconstructions-{file_safe(row['label'])}.png"
    plots.save_figure(figure, os.path.join(out, row["reconstructions_png"]))


def save_side_by_side(rows, shown_images, args):
    """For two or more models at one image size, `reconstructions.png`: the
    same validation images, then each model's reconstructions of them, one
    labelled row each. Returns its name, or `None` where not written."""
    sizes = {row["image_size"] for row in rows}
    if len(rows) < 2 or len(sizes) > 1:
        return None
    originals = shown_images[0][0]
    figure = plots.image_rows_figure(
        [originals] + [reconstructions for _, reconstructions in shown_images],
        ["original"] + [row["label"] for row in rows],
        title=f"{args.dataset} {args.split} split, {sizes.pop()} px",
    )
    plots.save_figure(figure, os.path.join(args.out, SIDE_BY_SIDE))
    return SIDE_BY_SIDE


def file_safe(label):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def format_table(rows, args):
    columns = [
        column
        for column in COLUMNS
        if column[1] not in OPTIONAL_COLUMNS or any(column[1] in row for row in rows)
    ]
    headings = ["model"] + [heading for heading, _, _ in columns]
    lines = [
        [row["label"]]
        + [
            "-" if row.get(key) is None else form.format(row[key])
            for _, key, form in columns
        ]
        for row in rows
    ]
    widths = [
        max(len(cell) for cell in column)
        for column in zip(headings, *lines, strict=True)
    ]
    lines = [headings] + lines
    text = [
        f"{args.dataset} {args.split} split, {rows[0]['num_images']:,} images; PSNR: "
        "mean of per-image PSNRs"
    ]
    for cells in lines:
        text.append(
            "  ".join(
                cell.ljust(width) if index == 0 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return "\n".join(text)


def write_results(rows, args, networks, side_by_side=None):
    results = {
        "command": shlex.join(["python", "scripts/evaluate.py", *args.argv]),
        "dataset": args.dataset,
        "split": args.split,
        # The flag; null: each model at its own size (its row's image_size).
        "image_size": args.image_size,
        "psnr": "mean of per-image PSNRs in dB; psnr_of_mean_mse: PSNR of the "
        "split's mean MSE",
        "ms_ssim": "mean per-image MS-SSIM over ms_ssim_scales scales (as many "
        "of the five as fit the image, weights renormalised)",
        "sharpness_ratio": "the reconstructions' summed Laplacian energy over the "
        "originals' (1: as sharp, < 1: blurrier)",
        "models": rows,
    }
    if networks["lpips"] is not None:
        results["lpips_weights"] = {
            **networks["lpips"].weight_files,
            "preprocessing": networks["lpips"].preprocessing,
        }
    if args.inception_weights:
        results["rfid"] = (
            f"Frechet distance of InceptionV3 pool features ({args.inception_weights}"
            f", images resized to {args.inception_size} px), originals against "
            "reconstructions"
        )
    if len(rows) > 1:
        figure = plots.rate_distortion_figure(
            rows, title=f"{args.dataset} {args.split} split"
        )
        plots.save_figure(figure, os.path.join(args.out, "rate_distortion.png"))
        results["rate_distortion_png"] = "rate_distortion.png"
    if side_by_side:
        results["reconstructions_png"] = side_by_side
    write_text(os.path.join(args.out, RESULTS), json.dumps(results, indent=2) + "\n")


def main(argv=None):
    def parse(argv):
        args = make_parser().parse_args(argv)
        args.argv = argv
        return args

    return cli.run("evaluate.py", parse, evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
