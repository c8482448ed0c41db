"""The tokenizer yardstick: distortion (PSNR, SSIM, MS-SSIM, GMSD, sharpness)
against rate (bits per token).

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

PSNR and SSIM reward blur; three measures see it: MS-SSIM (Wang et al. 2003,
with as many of its five scales as the image allows), GMSD (Xue et al. 2014,
the deviation of the gradient-magnitude similarity) and the sharpness ratio
(the reconstruction's Laplacian energy over the original's). Their
definitions are in docs/evaluation.md.

The rate comes from the code histogram of a whole split: its entropy in bits
per token (perplexity = 2 ** entropy) times the tokens per image.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_dvq.evaluation.fid import FeatureStatistics
from keras_dvq.evaluation.fid import split_frechet_distance
from keras_dvq.ops.code_statistics import entropy
from keras_dvq.utils.errors import BadInput

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
    luminance, contrast_structure = _ssim_maps(
        images, reconstructions, max_value, filter_size, filter_sigma, k1, k2
    )
    return ops.mean(luminance * contrast_structure, axis=(1, 2, 3))


def _ssim_maps(images, reconstructions, max_value, filter_size, sigma, k1, k2):
    """SSIM's luminance and contrast-structure maps over the valid positions
    of the Gaussian window, `(N, H - size + 1, W - size + 1, C)`."""
    channels = images.shape[-1]
    window = gaussian_window(filter_size, sigma)
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
    return luminance, contrast_structure


# Wang, Simoncelli and Bovik (2003), Table 1 (beta_j = gamma_j, alpha_M).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_scales(size, filter_size=11, max_scales=5):
    """How many MS-SSIM scales fit an image side: the window must fit the
    coarsest scale (side `size // 2 ** (scales - 1)`), at most `max_scales`;
    0 if it does not even fit the full size. 11 px filter: 1 scale at 11 px,
    2 at 32, 3 at 64, 4 at 128, all 5 from 176 px."""
    scales = 0
    while scales < max_scales and size // 2**scales >= filter_size:
        scales += 1
    return scales


def ms_ssim(
    images,
    reconstructions,
    max_value=1.0,
    filter_size=11,
    filter_sigma=1.5,
    k1=0.01,
    k2=0.03,
    num_scales=None,
):
    """Multi-scale structural similarity of each image, float32 `(N,)`.

    Wang, Simoncelli and Bovik (2003): SSIM's contrast-structure term at
    scales 1..M-1 and the full SSIM at the coarsest scale M, each the mean
    over the window's valid positions, raised to the paper's weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and multiplied; 2x2 average
    pooling (stride 2) between scales; per channel, then averaged over
    channels. As `tf.image.ssim_multiscale`, negative terms count as 0.

    Five scales with the 11x11 window need images of at least 176 px. By
    default (`num_scales=None`) the function takes as many scales as fit
    (`ms_ssim_scales`: 2 at 32 px, 3 at 64, 4 at 128) and renormalises the
    first M weights to sum to 1, so that the value stays a weighted
    geometric mean of terms in [0, 1]: 1 for identical images.

    Args:
        images: `(N, H, W, C)` originals in [0, max_value].
        reconstructions: the same shape.
        max_value: the dynamic range (1 for [0, 1] images).
        filter_size: side of the Gaussian window.
        filter_sigma: its standard deviation.
        k1, k2: SSIM's stabilising constants.
        num_scales: int in 1..5 or `None` (as many as fit).

    Example:

    ```python
    ms_ssim(images, model.predict(images)).mean()  # 2 scales at 32 px
    ```
    """
    images, reconstructions = _check_pair(images, reconstructions)
    side = min(images.shape[1], images.shape[2])
    fit = ms_ssim_scales(side, filter_size)
    if num_scales is None:
        num_scales = max(fit, 1)  # too small for one scale: the size error
    if not 1 <= num_scales <= len(MS_SSIM_WEIGHTS):
        raise BadInput(
            f"MS-SSIM takes 1 to {len(MS_SSIM_WEIGHTS)} scales. "
            f"Received: num_scales={num_scales}"
        )
    if num_scales > fit:
        needed = filter_size * 2 ** (num_scales - 1)
        raise BadInput(
            f"MS-SSIM with {num_scales} scale(s) and a {filter_size}x{filter_size} "
            f"window needs images of at least {needed}x{needed}. Received: "
            f"images.shape={tuple(images.shape)}"
        )
    weights = np.asarray(MS_SSIM_WEIGHTS[:num_scales], np.float64)
    weights = weights / weights.sum()
    value = 1.0
    for scale, weight in enumerate(weights):
        if scale:
            images = ops.average_pool(images, 2, 2, padding="valid")
            reconstructions = ops.average_pool(reconstructions, 2, 2, padding="valid")
        luminance, contrast_structure = _ssim_maps(
            images, reconstructions, max_value, filter_size, filter_sigma, k1, k2
        )
        if scale == num_scales - 1:
            contrast_structure = luminance * contrast_structure
        term = ops.relu(ops.mean(contrast_structure, axis=(1, 2)))  # (N, C)
        value = value * ops.power(term, float(weight))
    return ops.mean(value, axis=-1)


# Xue, Zhang, Mou and Bovik (2014), GMSD.m: T = 170 on [0, 255] images.
GMSD_CONSTANT = 170.0 / 255.0**2


def gmsd(images, reconstructions, max_value=1.0):
    """Gradient magnitude similarity deviation of each image, float32 `(N,)`.

    Xue et al. (2014), as their reference code GMSD.m computes it: luma
    (BT.601: 0.299 R + 0.587 G + 0.114 B; one channel: itself), 2x2 average
    pooling with stride 2, Prewitt gradients (the 3x3 kernels divided by 3,
    zero padding, same size), gradient magnitudes m_r and m_d,
    `GMS = (2 m_r m_d + c) / (m_r^2 + m_d^2 + c)` with c = 170 / 255^2 on
    [0, 1] images, and GMSD = the standard deviation of the GMS map (N - 1 in
    the denominator, as MATLAB's `std2`). 0 for identical images; larger is
    worse: blur lowers the similarity at edges only, and the deviation sees it.
    Images need at least 2x2 pixels.

    Example:

    ```python
    gmsd(images, model.predict(images)).mean()  # lower is better
    ```
    """
    images, reconstructions = _check_pair(images, reconstructions)
    if min(images.shape[1], images.shape[2]) < 2:
        raise BadInput(
            "GMSD needs images of at least 2x2 pixels. Received: "
            f"images.shape={tuple(images.shape)}"
        )
    prewitt = np.array([[1, 0, -1]] * 3, np.float32) / 3.0
    kernel = ops.convert_to_tensor(np.stack([prewitt, prewitt.T], -1)[:, :, None, :])

    def magnitude(x):
        x = ops.average_pool(_luma(x / max_value), 2, 2, padding="valid")
        gradients = ops.conv(x, kernel, padding="same")  # (N, h, w, 2)
        return ops.sqrt(ops.sum(ops.square(gradients), axis=-1))

    m_r, m_d = magnitude(images), magnitude(reconstructions)
    similarity = (2.0 * m_r * m_d + GMSD_CONSTANT) / (
        ops.square(m_r) + ops.square(m_d) + GMSD_CONSTANT
    )
    similarity = ops.reshape(similarity, (ops.shape(similarity)[0], -1))
    count = similarity.shape[1]
    deviation = similarity - ops.mean(similarity, axis=1, keepdims=True)
    return ops.sqrt(ops.sum(ops.square(deviation), axis=1) / max(count - 1, 1))


LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _luma(images):
    if images.shape[-1] == 1:
        return images
    if images.shape[-1] != 3:
        raise BadInput(
            "GMSD takes grey or RGB images (1 or 3 channels). Received: "
            f"images.shape={tuple(images.shape)}"
        )
    weights = ops.convert_to_tensor(np.array(LUMA_WEIGHTS, np.float32))
    return ops.sum(images * weights, axis=-1, keepdims=True)


LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def laplacian_energy(images):
    """High-frequency energy of each image, float32 `(N,)`: the mean square
    of the 3x3 Laplacian `[[0, 1, 0], [1, -4, 1], [0, 1, 0]]` of each
    channel, over the positions where the kernel fits (no padding, so that
    borders add nothing). Blur lowers it; noise raises it."""
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    if len(images.shape) != 4 or min(images.shape[1], images.shape[2]) < 3:
        raise BadInput(
            "The Laplacian energy needs image batches (N, H, W, C) of at least "
            f"3x3 pixels. Received: images.shape={tuple(images.shape)}"
        )
    channels = images.shape[-1]
    kernel = ops.convert_to_tensor(
        np.tile(LAPLACIAN[:, :, None, None], (1, 1, channels, 1))
    )
    high_pass = ops.depthwise_conv(images, kernel, padding="valid")
    return ops.mean(ops.square(high_pass), axis=(1, 2, 3))


def sharpness_ratio(images, reconstructions):
    """Each reconstruction's Laplacian energy over its original's, float32
    `(N,)`: 1 = as much high-frequency energy, < 1 = blurrier, > 1 = more
    (noise, ringing, checkerboard artefacts). An image without any detail
    (energy below 1e-12) divides by 1e-12. `SplitEvaluation` reports the
    ratio of the split's summed energies instead, which no flat image can
    dominate.

    Example:

    ```python
    sharpness_ratio(images, model.predict(images))  # blur: < 1
    ```
    """
    images, reconstructions = _check_pair(images, reconstructions)
    return laplacian_energy(reconstructions) / ops.maximum(
        laplacian_energy(images), 1e-12
    )


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
    histogram, mean MS-SSIM (with the number of scales that fit) and GMSD, and
    the sharpness ratio of the split: the reconstructions' summed Laplacian
    energy over the originals'. Per-image values are computed on the current
    backend with `keras.ops` and accumulated in float64 on the host.

    Args:
        vocabulary_size: int. Number of distinct token ids.
        lpips: an `LPIPS` model with trained weights (`load_lpips`), or
            `None`: the result then has no `lpips` (the mean distance).
        inception: an InceptionV3 feature model with trained weights
            (`load_inception`), or `None`: the result then has no `rfid`
            (the Frechet distance of the originals' and reconstructions'
            features over the whole split).
        batch_size: images per batch through those networks.

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

    def __init__(self, vocabulary_size, lpips=None, inception=None, batch_size=64):
        self.vocabulary_size = vocabulary_size
        self.lpips = lpips
        self.inception = inception
        self.batch_size = batch_size
        if inception is not None:
            self._features = (FeatureStatistics(), FeatureStatistics())
        self.counts = None  # (vocabulary_size,) or (stages, vocabulary_size)
        self.num_images = 0
        self.tokens_per_image = None
        self.ms_ssim_scales = None
        self._sums = dict.fromkeys(
            ("mse", "psnr", "ssim", "ms_ssim", "gmsd", "energy", "energy_original"),
            0.0,
        )

    def update(self, images, reconstructions, tokens):
        images = to_unit_float(images)
        tokens = np.asarray(tokens)
        per_image = {
            "mse": mse_per_image(images, reconstructions),
            "psnr": psnr(images, reconstructions),
            "ssim": ssim(images, reconstructions),
            "ms_ssim": ms_ssim(images, reconstructions),
            "gmsd": gmsd(images, reconstructions),
            "energy": laplacian_energy(reconstructions),
            "energy_original": laplacian_energy(images),
        }
        self.ms_ssim_scales = ms_ssim_scales(min(images.shape[1:3]))
        reconstructions = np.asarray(ops.convert_to_numpy(reconstructions), np.float32)
        if self.lpips is not None:
            per_image["lpips"] = self.lpips.predict(
                (images, reconstructions), batch_size=self.batch_size, verbose=0
            )
        if self.inception is not None:
            for statistics, batch in zip(
                self._features, (images, reconstructions), strict=True
            ):
                statistics.update(
                    self.inception.predict(batch, batch_size=self.batch_size, verbose=0)
                )
        for key, values in per_image.items():
            self._sums.setdefault(key, 0.0)
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
        perceptual = {}
        if self.lpips is not None:
            perceptual["lpips"] = means["lpips"]
        if self.inception is not None:
            perceptual["rfid"] = split_frechet_distance(*self._features)
        return {
            "num_images": self.num_images,
            "mse": means["mse"],
            "psnr": means["psnr"],
            "psnr_of_mean_mse": float(ops.convert_to_numpy(psnr_of_mse(means["mse"]))),
            "ssim": means["ssim"],
            "ms_ssim": means["ms_ssim"],
            "ms_ssim_scales": self.ms_ssim_scales,
            "gmsd": means["gmsd"],
            "sharpness_ratio": means["energy"] / max(means["energy_original"], 1e-12),
            "tokens_per_image": self.tokens_per_image,
            **rate_statistics(self.counts, self.tokens_per_image),
            **perceptual,
        }


def to_unit_float(images):
    """Float32 images in [0, 1] from uint8 (0-255) or float images."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)
