"""The tokenizer yardstick: distortion (PSNR, SSIM) against rate (bits per token).

Image tokenizers are compared by how much they distort an image at how many
bits its tokens carry, and by how much of their vocabulary they use. All
functions here take batches of images in [0, 1] (`(N, H, W, C)`, any float
dtype) and run on every backend through `keras.ops`; they return per-image
values, so that a caller can average them over a whole split.

PSNR is reported as the **mean of per-image PSNRs** (as tokenizer papers do);
`psnr_of_mse` gives the PSNR of a split's mean squared error, which is never
higher (the logarithm is concave) and is what the reconstruction loss of the
l2 flavor tracks.

SSIM is Wang et al. (2004) with an 11x11 Gaussian window of sigma 1.5,
K1 = 0.01, K2 = 0.03, over the "valid" positions of the window, per channel
and then averaged: the definition of `tf.image.ssim` and of
`skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`.

The rate comes from the code histogram of a whole split: its entropy in bits
per token (perplexity = 2 ** entropy) times the tokens per image.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_dvq.ops.code_statistics import entropy

# A perfect reconstruction has infinite PSNR; capping the MSE at 1e-10 caps
# the PSNR at 100 dB, far above anything lossy, so that means stay finite.
MIN_MSE = 1e-10


def mse_per_image(images, reconstructions):
    """Mean squared error of each image, float32 `(N,)`."""
    images, reconstructions = _check_pair(images, reconstructions)
    return ops.mean(ops.square(images - reconstructions), axis=(1, 2, 3))


def psnr(images, reconstructions, max_value=1.0):
    """Peak signal-to-noise ratio of each image in dB, float32 `(N,)`.

    `10 log10(max_value^2 / MSE)`, with the MSE capped below at 1e-10.

    Example:

    ```python
    psnr(images, model.predict(images)).mean()  # the split's mean PSNR
    ```
    """
    mse = mse_per_image(images, reconstructions)
    return _psnr_from_mse(mse, max_value)


def psnr_of_mse(mse, max_value=1.0):
    """PSNR in dB of a mean squared error (e.g. a split's mean MSE)."""
    return _psnr_from_mse(ops.convert_to_tensor(mse, "float32"), max_value)


def _psnr_from_mse(mse, max_value):
    mse = ops.maximum(ops.cast(mse, "float32"), MIN_MSE)
    return 10.0 * ops.log(max_value**2 / mse) / math.log(10.0)


def ssim(
    images,
    reconstructions,
    max_value=1.0,
    filter_size=11,
    filter_sigma=1.5,
    k1=0.01,
    k2=0.03,
):
    """Structural similarity of each image, float32 `(N,)`.

    The Gaussian-window SSIM of Wang et al. (2004), computed per channel over
    the positions where the whole window fits, then averaged over positions
    and channels. Images must be at least `filter_size` pixels high and wide.

    Example:

    ```python
    ssim(images, model.predict(images)).mean()
    ```
    """
    images, reconstructions = _check_pair(images, reconstructions)
    height, width, channels = images.shape[1:]
    if (height is not None and height < filter_size) or (
        width is not None and width < filter_size
    ):
        raise ValueError(
            f"SSIM needs images at least {filter_size}x{filter_size} (its window). "
            f"Received: images.shape={tuple(images.shape)}"
        )
    window = gaussian_window(filter_size, filter_sigma)
    # The 2-D Gaussian is separable: two 1-D passes, one per axis.
    rows = np.tile(window[:, None, None, None], (1, 1, channels, 1))
    columns = np.tile(window[None, :, None, None], (1, 1, channels, 1))
    rows, columns = ops.convert_to_tensor(rows), ops.convert_to_tensor(columns)

    def local_mean(x):
        x = ops.depthwise_conv(x, rows, padding="valid")
        return ops.depthwise_conv(x, columns, padding="valid")

    c1 = (k1 * max_value) ** 2
    c2 = (k2 * max_value) ** 2
    mean_x, mean_y = local_mean(images), local_mean(reconstructions)
    # Biased (population) variances and covariance, as both references.
    var_x = local_mean(images * images) - mean_x * mean_x
    var_y = local_mean(reconstructions * reconstructions) - mean_y * mean_y
    cov_xy = local_mean(images * reconstructions) - mean_x * mean_y
    luminance = (2.0 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    contrast_structure = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    return ops.mean(luminance * contrast_structure, axis=(1, 2, 3))


def gaussian_window(size, sigma):
    """The normalized 1-D Gaussian of `size` taps, float32 NumPy."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (window / window.sum()).astype(np.float32)


def entropy_bits(counts):
    """Entropy in bits of the distribution a histogram of counts describes."""
    counts = ops.cast(ops.convert_to_tensor(counts), "float32")
    return entropy(counts / ops.maximum(ops.sum(counts), 1.0)) / math.log(2.0)


def rate_statistics(counts, tokens_per_image):
    """Codebook usage and rate of a split, from its code histogram.

    Args:
        counts: `(vocabulary_size,)` how often each code occurred over the
            whole split, or `(stages, vocabulary_size)`, one histogram per
            residual stage.
        tokens_per_image: int. Token ids per image (e.g. 64 for an 8x8 grid,
            256 for an 8x8 grid of 4 residual stages).

    Returns:
        A dict of Python floats: `codes_used` (codes seen at least once; with
        stages, in the stage that uses fewest), `vocabulary_size`,
        `perplexity` (`2 ** bits_per_token`), `bits_per_token` (entropy of the
        histogram; with stages, the mean of the stages' entropies) and
        `bits_per_image` (`bits_per_token * tokens_per_image`); with stages
        also `codes_used_per_stage`.

    Example:

    ```python
    counts = np.bincount(tokens.ravel(), minlength=512)
    rate_statistics(counts, tokens_per_image=64)["bits_per_image"]
    ```
    """
    counts = np.asarray(keras.ops.convert_to_numpy(counts), dtype=np.float64)
    if counts.ndim not in (1, 2) or counts.size == 0 or (counts < 0).any():
        raise ValueError(
            "Argument `counts` must be a non-empty histogram of non-negative "
            "counts, 1-D or one row per stage. Received: shape "
            f"{counts.shape}"
        )
    stages = counts.reshape(-1, counts.shape[-1])
    # The stages' ids are separate symbols: the rate of a position is the sum
    # of their entropies, not the entropy of the pooled histogram.
    bits = float(
        np.mean([keras.ops.convert_to_numpy(entropy_bits(row)) for row in stages])
    )
    used = (stages > 0).sum(axis=1)
    statistics = {
        "codes_used": int(used.min()),
        "vocabulary_size": int(counts.shape[-1]),
        "perplexity": 2.0**bits,
        "bits_per_token": bits,
        "bits_per_image": bits * tokens_per_image,
    }
    if counts.ndim == 2:
        statistics["codes_used_per_stage"] = used.tolist()
    return statistics


def _check_pair(images, reconstructions):
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    reconstructions = ops.cast(ops.convert_to_tensor(reconstructions), "float32")
    if len(images.shape) != 4 or tuple(images.shape) != tuple(reconstructions.shape):
        raise ValueError(
            "Arguments `images` and `reconstructions` must be image batches "
            "(N, H, W, C) of the same shape. Received: "
            f"{tuple(images.shape)} and {tuple(reconstructions.shape)}"
        )
    return images, reconstructions


class SplitEvaluation:
    """Accumulates the yardstick over a split, one chunk of images at a time.

    Feed it the images of a split with their reconstructions and tokens
    (`update`); `result()` gives the split's mean MSE, mean per-image PSNR,
    PSNR of the mean MSE, mean SSIM and the rate statistics of its whole code
    histogram. Per-image values are computed on the current backend with
    `keras.ops` and accumulated in float64 on the host.

    Args:
        vocabulary_size: int. Number of distinct token ids.

    Tokens of shape `(N, h, w)` fill one histogram; tokens with a depth axis,
    `(N, h, w, stages)` (residual VQ), one per stage (see `rate_statistics`).

    Example:

    ```python
    split = SplitEvaluation(vocabulary_size=512)
    for images in batches:  # uint8 or [0, 1] float (N, H, W, C)
        tokens = model.encode(images)
        split.update(images, model.decode(tokens), tokens)
    split.result()["psnr"]
    ```
    """

    def __init__(self, vocabulary_size):
        self.vocabulary_size = vocabulary_size
        self.counts = None  # (vocabulary_size,) or (stages, vocabulary_size)
        self.num_images = 0
        self.tokens_per_image = None
        self._sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0}

    def update(self, images, reconstructions, tokens):
        images = to_unit_float(images)
        tokens = np.asarray(tokens)
        per_image = {
            "mse": mse_per_image(images, reconstructions),
            "psnr": psnr(images, reconstructions),
            "ssim": ssim(images, reconstructions),
        }
        for key, values in per_image.items():
            self._sums[key] += float(np.sum(ops.convert_to_numpy(values), dtype=float))
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocabulary_size):
            raise ValueError(
                f"Token ids must lie in [0, {self.vocabulary_size}). Received ids "
                f"from {tokens.min()} to {tokens.max()}."
            )
        stages = tokens.reshape(-1, int(np.prod(tokens.shape[3:])))
        counts = np.stack(
            [np.bincount(row, minlength=self.vocabulary_size) for row in stages.T]
        )
        if tokens.ndim <= 3:
            counts = counts[0]
        if self.counts is None:
            self.counts = np.zeros_like(counts)
        self.counts += counts
        self.num_images += len(images)
        self.tokens_per_image = int(np.prod(tokens.shape[1:]))

    def result(self):
        if not self.num_images:
            raise ValueError("No images were evaluated: the split is empty.")
        means = {key: total / self.num_images for key, total in self._sums.items()}
        return {
            "num_images": self.num_images,
            "mse": means["mse"],
            "psnr": means["psnr"],
            "psnr_of_mean_mse": float(ops.convert_to_numpy(psnr_of_mse(means["mse"]))),
            "ssim": means["ssim"],
            "tokens_per_image": self.tokens_per_image,
            **rate_statistics(self.counts, self.tokens_per_image),
        }


def to_unit_float(images):
    """Float32 images in [0, 1] from uint8 (0-255) or float images."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)
