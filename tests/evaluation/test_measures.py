"""keras_dvq.evaluation: PSNR, SSIM, MS-SSIM, GMSD, sharpness and rate against
independent references."""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from scipy import ndimage
from scipy import signal
from skimage.metrics import structural_similarity

from keras_dvq.data.datasets import load_dataset
from keras_dvq.evaluation import measures as evaluation
from keras_dvq.models import VQVAE
from keras_dvq.utils.errors import BadInput


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.fixture(scope="module")
def real_images():
    """16 validation patches of the bundled photographs, float in [0, 1]."""
    batch = next(iter(load_dataset("sample", "validation", batch_size=16)))
    return batch.numpy().astype(np.float32) / 255.0


def degraded(images, shift=1, noise=0.05, seed=0):
    """Images with noise, a contrast change and a shift: SSIM well below 1."""
    rng = np.random.default_rng(seed)
    noisy = 0.8 * images + 0.1 + rng.normal(0, noise, images.shape)
    return np.clip(np.roll(noisy, shift, axis=2), 0, 1).astype(np.float32)


def test_psnr_of_hand_made_errors():
    images = np.zeros((3, 4, 4, 1), "float32")
    reconstructions = images.copy()
    reconstructions[0] += 0.1  # MSE 1e-2: 20 dB
    reconstructions[1, 0, 0, 0] = 1.0  # MSE 1/16: 12.04 dB
    values = numpy(evaluation.psnr(images, reconstructions))
    np.testing.assert_allclose(
        values, [20.0, 10 * math.log10(16), 100.0], rtol=1e-5
    )  # a perfect reconstruction is capped at 100 dB
    mse = numpy(evaluation.mse_per_image(images, reconstructions))
    np.testing.assert_allclose(mse, [0.01, 1 / 16, 0.0], rtol=1e-5, atol=1e-12)


def test_psnr_of_mean_mse_is_at_most_the_mean_psnr(real_images):
    reconstructions = degraded(real_images)
    per_image = numpy(evaluation.psnr(real_images, reconstructions))
    mse = numpy(evaluation.mse_per_image(real_images, reconstructions))
    of_mean = float(numpy(evaluation.psnr_of_mse(mse.mean())))
    assert of_mean == pytest.approx(10 * math.log10(1 / mse.mean()), abs=1e-4)
    assert of_mean <= per_image.mean() + 1e-6
    # max_value rescales: images in [0, 255] give the same PSNR.
    scaled = numpy(evaluation.psnr(real_images * 255, reconstructions * 255, 255.0))
    np.testing.assert_allclose(scaled, per_image, atol=1e-3)


def test_ssim_of_identical_images_is_one(real_images):
    values = numpy(evaluation.ssim(real_images, real_images))
    np.testing.assert_allclose(values, 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["random", "real"])
def test_ssim_matches_tensorflow_and_skimage(kind, real_images):
    if kind == "random":
        rng = np.random.default_rng(1)
        images = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
        reconstructions = degraded(images, shift=0, noise=0.3)
    else:
        images = real_images
        reconstructions = degraded(images)
    ours = numpy(evaluation.ssim(images, reconstructions))
    with tf.device("CPU"):
        theirs_tf = tf.image.ssim(
            tf.constant(images), tf.constant(reconstructions), max_val=1.0
        ).numpy()
    theirs_skimage = [
        structural_similarity(
            image.astype(np.float64),
            reconstruction.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for image, reconstruction in zip(images, reconstructions, strict=True)
    ]
    assert 0.05 < ours.mean() < 0.95  # a real test: far from both extremes
    np.testing.assert_allclose(ours, theirs_tf, atol=1e-4)
    np.testing.assert_allclose(ours, theirs_skimage, atol=1e-4)


def test_ssim_rejects_images_smaller_than_its_window():
    images = np.zeros((1, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="at least 11x11"):
        evaluation.ssim(images, images)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\) and \(2, 8, 8, 1\)"):
        evaluation.psnr(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 1)))


def test_rate_statistics_of_a_hand_made_histogram():
    stats = evaluation.rate_statistics(np.array([6, 3, 0, 1, 0, 0, 0, 0]), 64)
    probs = np.array([0.6, 0.3, 0.1])
    bits = -(probs * np.log2(probs)).sum()
    assert stats["codes_used"] == 3
    assert stats["vocabulary_size"] == 8
    assert stats["bits_per_token"] == pytest.approx(bits, rel=1e-5)
    assert stats["perplexity"] == pytest.approx(2**bits, rel=1e-5)
    assert stats["bits_per_image"] == pytest.approx(64 * bits, rel=1e-5)
    uniform = evaluation.rate_statistics(np.ones(512), 64)
    assert uniform["bits_per_token"] == pytest.approx(9.0, rel=1e-6)


def test_rate_statistics_rejects_bad_histograms():
    with pytest.raises(ValueError, match="non-negative"):
        evaluation.rate_statistics(np.array([1, -1]), 4)
    with pytest.raises(ValueError, match="one row per stage.*shape \\(2, 2, 2\\)"):
        evaluation.rate_statistics(np.ones((2, 2, 2)), 4)


def test_rate_of_residual_stages_sums_their_entropies():
    # Stage 1 spreads over 4 codes (2 bits), stage 2 over 2 (1 bit): a
    # position carries 3 bits; the pooled histogram would claim less.
    counts = np.array([[5, 5, 5, 5, 0, 0, 0, 0], [10, 10, 0, 0, 0, 0, 0, 0]])
    stats = evaluation.rate_statistics(counts, tokens_per_image=2 * 64)
    assert stats["bits_per_token"] == pytest.approx(1.5)
    assert stats["bits_per_image"] == pytest.approx(3 * 64)
    assert stats["codes_used"] == 2
    assert stats["codes_used_per_stage"] == [4, 2]
    assert stats["vocabulary_size"] == 8


def test_split_evaluation_in_chunks_equals_one_pass(real_images):
    reconstructions = degraded(real_images)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=(len(real_images), 8, 8))
    whole = evaluation.SplitEvaluation(8)
    whole.update(real_images, reconstructions, tokens)
    chunked = evaluation.SplitEvaluation(8)
    for part in (slice(0, 5), slice(5, 16)):
        uint8 = np.round(real_images[part] * 255).astype(np.uint8)
        chunked.update(uint8 / 255.0, reconstructions[part], tokens[part])
    expected, result = whole.result(), chunked.result()
    keys = ("mse", "psnr", "ssim", "bits_per_token", "psnr_of_mean_mse")
    for key in keys + ("ms_ssim", "gmsd", "sharpness_ratio"):
        assert result[key] == pytest.approx(expected[key], abs=1e-4), key
    assert result["num_images"] == 16
    assert result["tokens_per_image"] == 64
    assert result["codes_used"] == len(np.unique(tokens))
    per_image = numpy(evaluation.psnr(real_images, reconstructions))
    assert expected["psnr"] == pytest.approx(per_image.mean(), abs=1e-4)
    assert expected["ms_ssim_scales"] == 2  # 32 px
    energy = np.mean([numpy_laplacian_energy(x) for x in reconstructions])
    energy_original = np.mean([numpy_laplacian_energy(x) for x in real_images])
    assert expected["sharpness_ratio"] == pytest.approx(
        energy / energy_original, rel=1e-4
    )


def test_split_evaluation_keeps_one_histogram_per_stage(real_images):
    rng = np.random.default_rng(0)
    tokens = np.stack(
        [rng.integers(0, 8, size=(16, 8, 8)), rng.integers(0, 2, size=(16, 8, 8))],
        axis=-1,
    )
    split = evaluation.SplitEvaluation(8)
    split.update(real_images, real_images, tokens)
    result = split.result()
    assert split.counts.shape == (2, 8)
    np.testing.assert_array_equal(
        split.counts[1, :2], np.bincount(tokens[..., 1].ravel())
    )
    assert result["tokens_per_image"] == 128
    assert result["codes_used_per_stage"] == [8, 2]
    assert result["bits_per_token"] == pytest.approx((3 + 1) / 2, abs=0.02)


def test_split_evaluation_errors():
    split = evaluation.SplitEvaluation(4)
    with pytest.raises(ValueError, match="split is empty"):
        split.result()
    images = np.zeros((1, 16, 16, 3), "float32")
    with pytest.raises(ValueError, match=r"\[0, 4\).*from 0 to 4"):
        split.update(images, images, np.array([[[0, 4]]]))


def test_fit_logs_psnr_of_the_reconstructions(real_images):
    model = VQVAE.from_flavors(num_embeddings=8, embedding_dim=4, n_hid=8)
    model.compile()
    history = model.fit(
        real_images, batch_size=8, epochs=1, validation_data=(real_images,), verbose=0
    )
    assert {"psnr", "val_psnr"} <= set(history.history)
    expected = numpy(evaluation.psnr(real_images, model.predict(real_images))).mean()
    logs = model.evaluate(real_images, batch_size=8, return_dict=True, verbose=0)
    assert logs["psnr"] == pytest.approx(expected, abs=1e-3)


# MS-SSIM, GMSD and the sharpness ratio, each against a NumPy transcription of
# its paper (or the authors' code) written here, independently of the module.


def blurred(images, sigma=1.0):
    return ndimage.gaussian_filter(images, (0, sigma, sigma, 0)).astype(np.float32)


def numpy_valid_gaussian(x, size=11, sigma=1.5):
    """2-D Gaussian filter of one channel over the positions it fits."""
    taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    return signal.correlate2d(x, kernel, mode="valid")


def numpy_ms_ssim(x, y, scales):
    """Wang et al. 2003, eq. (7), for one image (H, W, C) in [0, 1]."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:scales])
    weights = weights / weights.sum()
    c1, c2 = 0.01**2, 0.03**2
    x, y = x.astype(np.float64), y.astype(np.float64)
    per_channel = []
    for c in range(x.shape[-1]):
        a, b, value = x[..., c], y[..., c], 1.0
        for j in range(scales):
            if j:  # 2x2 block means (low-pass and downsample by 2)
                a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean((1, 3))
                b = b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2).mean((1, 3))
            mu_a, mu_b = numpy_valid_gaussian(a), numpy_valid_gaussian(b)
            var_a = numpy_valid_gaussian(a * a) - mu_a**2
            var_b = numpy_valid_gaussian(b * b) - mu_b**2
            cov = numpy_valid_gaussian(a * b) - mu_a * mu_b
            term = (2 * cov + c2) / (var_a + var_b + c2)
            if j == scales - 1:
                term = term * (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
            value *= max(term.mean(), 0.0) ** weights[j]
        per_channel.append(value)
    return np.mean(per_channel)


@pytest.mark.parametrize("size,scales", [(32, 2), (64, 3), (176, 5)])
def test_ms_ssim_matches_the_paper_and_tensorflow(size, scales):
    rng = np.random.default_rng(size)
    smooth = ndimage.gaussian_filter(rng.uniform(size=(3, size, size, 3)), (0, 2, 2, 0))
    images = np.clip((smooth - smooth.min()) * 3, 0, 1).astype(np.float32)
    reconstructions = degraded(blurred(images), shift=0, noise=0.03)
    assert evaluation.ms_ssim_scales(size) == scales
    ours = numpy(evaluation.ms_ssim(images, reconstructions))
    hand = [
        numpy_ms_ssim(x, y, scales)
        for x, y in zip(images, reconstructions, strict=True)
    ]
    weights = np.array(evaluation.MS_SSIM_WEIGHTS[:scales])
    with tf.device("CPU"):
        theirs_tf = tf.image.ssim_multiscale(
            tf.constant(images),
            tf.constant(reconstructions),
            max_val=1.0,
            power_factors=weights / weights.sum(),
        ).numpy()
    assert 0.2 < ours.mean() < 0.98
    np.testing.assert_allclose(ours, hand, atol=1e-4)
    np.testing.assert_allclose(ours, theirs_tf, atol=1e-4)


def test_ms_ssim_known_values_and_sizes(real_images):
    np.testing.assert_allclose(
        numpy(evaluation.ms_ssim(real_images, real_images)), 1.0, atol=1e-5
    )
    blur = numpy(evaluation.ms_ssim(real_images, blurred(real_images)))
    assert (blur < 0.999).all()
    assert [evaluation.ms_ssim_scales(s) for s in (10, 11, 21, 22, 128, 176)] == [
        0,
        1,
        1,
        2,
        4,
        5,
    ]
    one_scale = numpy(
        evaluation.ms_ssim(real_images, blurred(real_images), num_scales=1)
    )
    ssim = numpy(evaluation.ssim(real_images, blurred(real_images)))
    # One scale is SSIM, except that MS-SSIM averages over channels last.
    np.testing.assert_allclose(one_scale, ssim, atol=1e-5)


def test_ms_ssim_rejects_images_too_small_for_its_scales():
    images = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(BadInput, match="3 scale.*at least 44x44.*32, 32, 3"):
        evaluation.ms_ssim(images, images, num_scales=3)
    with pytest.raises(BadInput, match="at least 11x11.*8, 8, 3"):
        evaluation.ms_ssim(images[:, :8, :8], images[:, :8, :8])
    with pytest.raises(BadInput, match="1 to 5 scales.*num_scales=6"):
        evaluation.ms_ssim(images, images, num_scales=6)


def matlab_conv2_same(x, kernel):
    """MATLAB's `conv2(x, kernel, 'same')`: the central part of the full
    convolution, starting at floor(size / 2) (0-based)."""
    full = signal.convolve2d(x, kernel, mode="full")
    top, left = kernel.shape[0] // 2, kernel.shape[1] // 2
    return full[top : top + x.shape[0], left : left + x.shape[1]]


def numpy_gmsd(x, y):
    """GMSD.m of Xue et al. (2014) line by line, for one RGB image in [0, 1]
    taken to [0, 255] as the authors' code expects."""
    luma = np.array([0.299, 0.587, 0.114])
    y1, y2 = (255.0 * image.astype(np.float64) @ luma for image in (x, y))
    dx = np.array([[1, 0, -1]] * 3) / 3.0
    dy = dx.T
    ave_kernel = np.ones((2, 2)) / 4.0
    maps = []
    for image in (y1, y2):
        image = matlab_conv2_same(image, ave_kernel)[::2, ::2]
        ix = matlab_conv2_same(image, dx)
        iy = matlab_conv2_same(image, dy)
        maps.append(np.sqrt(ix**2 + iy**2))
    t = 170.0
    quality = (2 * maps[0] * maps[1] + t) / (maps[0] ** 2 + maps[1] ** 2 + t)
    return quality.std(ddof=1)  # std2


def test_gmsd_matches_the_authors_code(real_images):
    reconstructions = degraded(blurred(real_images), shift=0, noise=0.02)
    ours = numpy(evaluation.gmsd(real_images, reconstructions))
    hand = [numpy_gmsd(x, y) for x, y in zip(real_images, reconstructions, strict=True)]
    assert 0.01 < ours.mean() < 0.3
    np.testing.assert_allclose(ours, hand, rtol=1e-4, atol=1e-6)
    # Grey images: their one channel is the luma.
    grey = real_images.mean(-1, keepdims=True)
    grey_reconstructions = reconstructions.mean(-1, keepdims=True)
    hand_grey = numpy_gmsd(
        np.repeat(grey[0], 3, -1), np.repeat(grey_reconstructions[0], 3, -1)
    )
    ours_grey = numpy(evaluation.gmsd(grey[:1], grey_reconstructions[:1]))
    np.testing.assert_allclose(ours_grey, [hand_grey], rtol=1e-4)


def test_gmsd_is_zero_for_identical_images_and_sees_blur(real_images):
    np.testing.assert_allclose(
        numpy(evaluation.gmsd(real_images, real_images)), 0.0, atol=1e-6
    )
    light, heavy = (
        numpy(evaluation.gmsd(real_images, blurred(real_images, sigma)))
        for sigma in (0.7, 1.5)
    )
    assert (light > 0).all() and heavy.mean() > light.mean()
    with pytest.raises(BadInput, match="1 or 3 channels.*1, 8, 8, 2"):
        evaluation.gmsd(np.zeros((1, 8, 8, 2)), np.zeros((1, 8, 8, 2)))


def numpy_laplacian_energy(image):
    """Mean square of the 5-point Laplacian (scipy's) over interior pixels."""
    high_pass = np.stack(
        [ndimage.laplace(image[..., c].astype(np.float64)) for c in range(3)], -1
    )
    return np.mean(high_pass[1:-1, 1:-1] ** 2)


def test_sharpness_ratio_against_scipy_and_known_values(real_images):
    blur = blurred(real_images)
    rng = np.random.default_rng(0)
    noisy = np.clip(real_images + rng.normal(0, 0.05, real_images.shape), 0, 1)
    hand = [
        numpy_laplacian_energy(y) / numpy_laplacian_energy(x)
        for x, y in zip(real_images, blur, strict=True)
    ]
    ours = numpy(evaluation.sharpness_ratio(real_images, blur))
    np.testing.assert_allclose(ours, hand, rtol=1e-4)
    assert (ours < 1).all()
    np.testing.assert_allclose(
        numpy(evaluation.sharpness_ratio(real_images, real_images)), 1.0, rtol=1e-6
    )
    assert (numpy(evaluation.sharpness_ratio(real_images, noisy)) > 1).all()
