"""The pictures a run and an evaluation leave behind, drawn with matplotlib.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no
global state, no display needed, safe in callbacks and threads); `save_figure`
writes one as a PNG and `figure_to_array` renders one for TensorBoard
(`save_picture` writes such a rendering as a PNG).
"""

import math
import os

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_dvq.evaluation.measures import rate_statistics
from keras_dvq.utils.atomic import atomic_path

DPI = 100
# Loss terms are drawn on a log axis; the other metrics on their own axes.
CURVE_PANELS = (
    ("loss terms", ("recon_loss", "latent_loss", "perceptual_loss"), "log"),
    ("PSNR (dB)", ("psnr",), "linear"),
    ("perplexity", ("perplexity",), "linear"),
    ("codes used", ("cluster_use",), "linear"),
)
# Added for runs with a discriminator (those whose rows have `disc_loss`).
ADVERSARIAL_PANELS = (
    (
        "adversarial losses and weight",
        ("adv_loss", "disc_loss", "lecam_loss", "adv_weight"),
        "linear",
    ),
    ("discriminator's mean logits", ("logits_real", "logits_fake"), "linear"),
)


def image_grid(rows, columns=None, gap=1):
    """Tiles equally sized image batches `(N, H, W, C)` in [0, 1] into one
    float RGB image, one batch per row of the grid, `gap` white pixels apart."""
    rows = [np.asarray(batch, dtype=np.float32)[:columns] for batch in rows]
    count, height, width, _ = rows[0].shape
    grid = np.ones(
        (len(rows) * (height + gap) - gap, count * (width + gap) - gap, 3),
        dtype=np.float32,
    )
    for r, batch in enumerate(rows):
        for c, image in enumerate(batch):
            y, x = r * (height + gap), c * (width + gap)
            grid[y : y + height, x : x + width] = _rgb(image)
    return np.clip(grid, 0.0, 1.0)


def _rgb(image):
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


def rows_of(images, per_row):
    """`(rows, per_row, H, W, C)` float images, white images completing the
    last row."""
    images = np.asarray(images, dtype=np.float32)
    blank = np.ones((-len(images) % per_row, *images.shape[1:]), dtype=np.float32)
    return np.concatenate([images, blank]).reshape(-1, per_row, *images.shape[1:])


def enlarge(image, scale):
    """Nearest-neighbour enlargement of an `(H, W, C)` image by an integer."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def image_rows_figure(rows, labels, scale=4, title=None):
    """Labelled rows of images, each row a batch `(N, H, W, C)` in [0, 1],
    enlarged `scale` times with nearest neighbours so that small images
    (32x32) stay sharp and readable.

    Example:

    ```python
    figure = image_rows_figure([originals, reconstructions],
                               ["original", "reconstruction"])
    save_figure(figure, "reconstructions.png")
    ```
    """
    if len(rows) != len(labels):
        raise ValueError(
            f"Expected one label per row: {len(rows)} rows, {len(labels)} labels."
        )
    strips = [enlarge(image_grid([batch], gap=1), scale) for batch in rows]
    height, width = strips[0].shape[:2]
    label_inches, title_inches = 1.4, 0.35 if title else 0.1
    row_inches = height / DPI + 0.08
    figure = Figure(
        figsize=(
            width / DPI + label_inches + 0.1,
            len(rows) * row_inches + title_inches,
        ),
        dpi=DPI,
    )
    total_height = figure.get_figheight()
    left = label_inches / figure.get_figwidth()
    for index, (strip, label) in enumerate(zip(strips, labels, strict=True)):
        bottom = 1 - (title_inches + (index + 1) * row_inches) / total_height
        axes = figure.add_axes(
            (
                left,
                bottom,
                1 - left - 0.1 / figure.get_figwidth(),
                (row_inches - 0.08) / total_height,
            )
        )
        axes.imshow(strip, interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    if title:
        figure.suptitle(title, y=1 - 0.05 / total_height, va="top", fontsize=10)
    return figure


def comparison_figure(originals, reconstructions, per_row=8, scale=4, title=None):
    """Originals above their reconstructions, `per_row` images wide, in as
    many row pairs as needed; see `image_rows_figure`.

    Example:

    ```python
    figure = comparison_figure(images[:16], model.predict(images[:16]))
    ```
    """
    per_row = min(per_row, len(originals))
    rows = [rows_of(images, per_row) for images in (originals, reconstructions)]
    interleaved = [row for pair in zip(*rows, strict=True) for row in pair]
    labels = ["original", "reconstruction"] * (len(interleaved) // 2)
    return image_rows_figure(interleaved, labels, scale=scale, title=title)


def image_grid_figure(images, columns=None, scale=4, title=None):
    """Images `(N, H, W, C)` in [0, 1] on a near-square grid, enlarged `scale`
    times with nearest neighbours (e.g. samples of a token prior).

    Example:

    ```python
    save_figure(image_grid_figure(samples, title="16 samples"), "samples.png")
    ```
    """
    columns = columns or math.ceil(math.sqrt(len(images)))
    grid = enlarge(image_grid(list(rows_of(images, columns)), gap=2), scale)
    height, width = grid.shape[:2]
    title_inches = 0.4 if title else 0.0
    figure = Figure(figsize=(width / DPI, height / DPI + title_inches), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, height / (height + title_inches * DPI)))
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    if title:
        figure.suptitle(
            title, y=1 - 0.05 / figure.get_figheight(), va="top", fontsize=9
        )
    return figure


def codebook_usage_figure(counts, tokens_per_image=None, title=None):
    """Code counts sorted by use on a log axis, with the codes used,
    perplexity and (given `tokens_per_image`) the rate in the title.

    Example:

    ```python
    counts = np.bincount(tokens.ravel(), minlength=512)
    save_figure(codebook_usage_figure(counts, 64), "codebook_usage.png")
    ```
    """
    counts = np.asarray(counts, dtype=np.float64)
    stats = rate_statistics(counts, tokens_per_image or 1)
    ordered = np.sort(counts)[::-1]
    used = stats["codes_used"]
    figure = Figure(figsize=(7, 3.6), dpi=DPI)
    axes = figure.add_subplot()
    ranks = np.arange(1, len(ordered) + 1)
    if used:
        axes.fill_between(
            ranks[:used], ordered[:used], step="mid", color="#2b6ca3", alpha=0.85
        )
        axes.set_yscale("log")
        axes.set_ylim(0.8, ordered[0] * 1.5)
    if used < len(ordered):
        axes.axvspan(used + 0.5, len(ordered) + 0.5, color="#d62728", alpha=0.12)
        axes.text(
            (used + len(ordered)) / 2 + 0.5,
            0.5,
            f"{len(ordered) - used} unused",
            transform=axes.get_xaxis_transform(),
            ha="center",
            color="#a01010",
        )
    axes.set_xlim(0.5, len(ordered) + 0.5)
    axes.set_xlabel("codes, sorted by use")
    axes.set_ylabel("count (log scale)")
    headline = (
        f"{used} of {len(ordered)} codes used, perplexity {stats['perplexity']:.1f}"
    )
    if tokens_per_image:
        headline += (
            f", {stats['bits_per_token']:.2f} bits/token, "
            f"{stats['bits_per_image']:.0f} bits/image"
        )
    axes.set_title(f"{title}\n{headline}" if title else headline, fontsize=10)
    axes.grid(True, which="major", axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def training_curves_figure(rows, steps_per_epoch=1, title=None):
    """Loss terms, PSNR, perplexity and codes used against training steps;
    for runs with a discriminator also its losses, the adversarial weight
    and its mean logits on real and reconstructed images.

    Args:
        rows: the epochs of a run, dicts of `metrics.csv` columns (`epoch`,
            `recon_loss`, `val_recon_loss`, ...); columns a run lacks are
            left out.
        steps_per_epoch: int. Steps of one epoch (the x axis counts steps).
        title: optional figure title.

    Example:

    ```python
    rows = list(csv.DictReader(open("runs/demo/metrics.csv")))
    save_figure(training_curves_figure(rows, 150), "training_curves.png")
    ```
    """
    steps = np.array([(int(row["epoch"]) + 1) * steps_per_epoch for row in rows])
    panels = CURVE_PANELS
    if _column(rows, "disc_loss") is not None:
        panels = CURVE_PANELS + ADVERSARIAL_PANELS
    columns = len(panels) // 2
    figure = Figure(figsize=(5 * columns, 6.4), dpi=DPI)
    grid = figure.subplots(2, columns, squeeze=False).ravel()
    for axes, (label, keys, scale) in zip(grid, panels, strict=True):
        for key in keys:
            for prefix, style in (("", "-"), ("val_", "--")):
                values = _column(rows, prefix + key)
                if values is None:
                    continue
                axes.plot(steps, values, style, marker=".", label=prefix + key)
        if axes.lines:
            if scale == "log" and all(
                np.all(line.get_ydata() > 0) for line in axes.lines
            ):
                axes.set_yscale("log")
            axes.legend(fontsize=8)
        axes.set_title(label, fontsize=10)
        axes.set_xlabel("training steps")
        axes.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def _column(rows, key):
    """The float values of a `metrics.csv` column, or `None` where it is
    missing or empty in any row."""
    try:
        values = [float(row[key]) for row in rows]
    except (KeyError, TypeError, ValueError):
        return None
    return np.array(values)


def rate_distortion_figure(points, title=None):
    """PSNR against bits per image, one labelled point per tokenizer.

    Args:
        points: dicts with `label`, `bits_per_image` and `psnr`.
        title: optional axes title.

    Example:

    ```python
    figure = rate_distortion_figure(
        [{"label": "vq", "bits_per_image": 480, "psnr": 26.1}])
    ```
    """
    figure = Figure(figsize=(6.4, 4.4), dpi=DPI)
    axes = figure.add_subplot()
    for point in points:
        rate, quality = point["bits_per_image"], point["psnr"]
        axes.scatter(rate, quality, s=36, zorder=3)
        axes.annotate(
            point["label"],
            (rate, quality),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    rates = [point["bits_per_image"] for point in points]
    if rates and all(math.isfinite(rate) for rate in rates):
        span = max(max(rates) - min(rates), 1.0)
        axes.set_xlim(min(rates) - 0.1 * span, max(rates) + 0.35 * span)
    axes.set_xlabel("rate: bits per image (code entropy x tokens per image)")
    axes.set_ylabel("distortion: PSNR (dB, mean over images)")
    axes.set_title(title or "rate-distortion", fontsize=10)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def prior_curves_figure(history, baselines, split="validation"):
    """A token prior's cross-entropy per epoch in bits per token, with the
    frequency-only baselines it must beat.

    Args:
        history: a Keras `History.history` dict with `loss` and, if the prior
            was validated, `val_loss` (nats per token).
        baselines: dict with `unigram_cross_entropy` and `log2_vocabulary`
            (bits per token).
        split: the split the unigram baseline is measured on, for its label.

    Example:

    ```python
    figure = prior_curves_figure({"loss": [5.1, 4.2]},
                                 {"unigram_cross_entropy": 6.0, "log2_vocabulary": 9})
    ```
    """
    figure = Figure(figsize=(6, 4), dpi=DPI)
    axes = figure.add_subplot()
    epochs = np.arange(1, len(history["loss"]) + 1)
    to_bits = 1 / math.log(2)
    axes.plot(epochs, np.array(history["loss"]) * to_bits, "o-", label="train")
    if "val_loss" in history:
        axes.plot(
            epochs, np.array(history["val_loss"]) * to_bits, "o-", label="validation"
        )
    axes.axhline(
        baselines["unigram_cross_entropy"],
        color="gray",
        linestyle="--",
        label=f"unigram ({split})",
    )
    axes.axhline(
        baselines["log2_vocabulary"], color="black", linestyle=":", label="log2 K"
    )
    axes.set_xlabel("epoch")
    axes.set_ylabel("bits per token")
    axes.set_title("TokenPrior cross-entropy", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def save_figure(figure, path):
    """Writes a figure as a PNG, through a temporary file renamed into place
    so that a reader never sees half a picture."""
    FigureCanvasAgg(figure)
    with _new_file(path) as temporary:
        figure.savefig(temporary, format="png")


def save_picture(picture, path):
    """Writes a uint8 RGB array (as `figure_to_array` renders) as a PNG,
    through a temporary file renamed into place."""
    with _new_file(path) as temporary:
        matplotlib.image.imsave(temporary, picture, format="png")


def _new_file(path):
    """`atomic_path(path)`, its directory created if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic_path(path)


def figure_to_array(figure):
    """The figure rendered as a uint8 RGB array `(H, W, 3)`."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
