import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq import losses


def to_numpy(x):
    return ops.convert_to_numpy(x)


def log_prob(loss, x, decoder_output):
    x = ops.convert_to_tensor(x, "float32")
    decoder_output = ops.convert_to_tensor(decoder_output, "float32")
    return to_numpy(loss.log_prob(x, decoder_output))


def numpy_logit_laplace_nll(x, decoder_output):
    """Per-pixel NLL `ln 2 + ln b + ln x + ln(1-x) + |logit(x) - mu| / b`."""
    x = np.asarray(x, "float64")
    decoder_output = np.asarray(decoder_output, "float64")
    channels = x.shape[-1]
    mu, log_b = decoder_output[..., :channels], decoder_output[..., channels:]
    logit = np.log(x) - np.log1p(-x)
    return (
        math.log(2.0)
        + log_b
        + np.log(x)
        + np.log1p(-x)
        + np.abs(logit - mu) / np.exp(log_b)
    )


def test_gaussian_nll_matches_numpy(rng):
    variance = 0.05
    loss = losses.GaussianNLL(data_variance=variance)
    images = rng.uniform(size=(3, 4, 5, 3)).astype("float32")
    decoder_output = rng.normal(scale=0.3, size=(3, 4, 5, 3)).astype("float32")
    expected = ((images - 0.5 - decoder_output) ** 2).mean() / (2 * variance)
    value = loss(loss.in_map(images), decoder_output)
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-5)
    # Perfect predictions cost nothing.
    assert float(to_numpy(loss(loss.in_map(images), loss.in_map(images)))) == 0.0


def test_gaussian_default_variance_is_cifar10():
    assert losses.GaussianNLL().data_variance == pytest.approx(0.0632704, rel=1e-6)


def test_gaussian_maps_round_trip(rng):
    loss = losses.GaussianNLL()
    images = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    mapped = to_numpy(loss.in_map(images))
    np.testing.assert_allclose(mapped, images - 0.5, atol=1e-7)
    np.testing.assert_allclose(to_numpy(loss.out_map(mapped)), images, atol=1e-6)
    # Decoder outputs outside the pixel range are clipped into [0, 1].
    clipped = to_numpy(loss.out_map(np.array([-3.0, 0.0, 3.0], "float32")))
    np.testing.assert_allclose(clipped, [0.0, 0.5, 1.0])


def test_logit_laplace_nll_matches_numpy(rng):
    loss = losses.LogitLaplaceNLL()
    images = rng.uniform(size=(3, 4, 5, 3)).astype("float32")
    decoder_output = rng.normal(size=(3, 4, 5, 6)).astype("float32")
    mapped = to_numpy(loss.in_map(images))
    np.testing.assert_allclose(mapped, 0.8 * images + 0.1, atol=1e-7)
    expected = numpy_logit_laplace_nll(mapped, decoder_output)
    np.testing.assert_allclose(
        -log_prob(loss, mapped, decoder_output), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(loss(mapped, decoder_output)), expected.mean(), rtol=1e-5
    )


def test_logit_laplace_splits_all_mus_before_all_log_scales():
    loss = losses.LogitLaplaceNLL()
    x = np.full((1, 1, 1, 2), 0.5, "float32")  # logit(x) = 0
    # Channel 0: mu = 1, ln b = 0; channel 1: mu = 0, ln b = ln 2.
    decoder_output = np.array([[[[1.0, 0.0, 0.0, math.log(2.0)]]]], "float32")
    expected = [
        math.log(2.0) + 2 * math.log(0.5) + 1.0,
        math.log(2.0) + math.log(2.0) + 2 * math.log(0.5),
    ]
    np.testing.assert_allclose(
        -log_prob(loss, x, decoder_output)[0, 0, 0], expected, rtol=1e-6
    )


@pytest.mark.parametrize("mu, b", [(0.0, 1.0), (-2.0, 0.3), (1.5, 0.7), (0.5, 2.0)])
def test_logit_laplace_density_integrates_to_one(mu, b):
    loss = losses.LogitLaplaceNLL()
    # Points evenly spaced in logit space, where the density is a Laplace;
    # float32 pixels cannot get closer to 1 than about sigmoid(16).
    t = np.linspace(-16.0, 16.0, 40001)
    x = (1.0 / (1.0 + np.exp(-t))).astype("float32")
    x = x[(x > 0) & (x < 1)]
    decoder_output = np.stack(
        [np.full_like(x, mu), np.full_like(x, math.log(b))], axis=-1
    )
    density = np.exp(log_prob(loss, x[:, None], decoder_output)[:, 0])
    total = np.trapezoid(density.astype("float64"), x.astype("float64"))
    assert total == pytest.approx(1.0, abs=1e-3)


def test_logit_laplace_log_prob_accepts_numpy_arrays():
    loss = losses.LogitLaplaceNLL()
    x = np.full((1, 2, 2, 3), 0.5, "float32")
    decoder_output = np.zeros((1, 2, 2, 6), "float32")
    np.testing.assert_allclose(
        to_numpy(loss.log_prob(x, decoder_output)), -math.log(2.0) - 2 * math.log(0.5)
    )


def test_logit_laplace_out_map(rng):
    eps = 0.1
    loss = losses.LogitLaplaceNLL(eps=eps)
    decoder_output = rng.normal(scale=3.0, size=(2, 4, 4, 6)).astype("float32")
    mu = decoder_output[..., :3].astype("float64")
    expected = np.clip((1 / (1 + np.exp(-mu)) - eps) / (1 - 2 * eps), 0, 1)
    pixels = to_numpy(loss.out_map(decoder_output))
    assert pixels.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    # out_map inverts in_map through mu = logit(in_map(x)).
    images = rng.uniform(0.05, 0.95, size=(2, 4, 4, 3))
    mapped = to_numpy(loss.in_map(images))
    mu = np.log(mapped) - np.log1p(-mapped)
    output = np.concatenate([mu, np.zeros_like(mu)], axis=-1).astype("float32")
    np.testing.assert_allclose(to_numpy(loss.out_map(output)), images, atol=1e-5)


def test_get():
    assert isinstance(losses.get("l2"), losses.GaussianNLL)
    assert isinstance(losses.get("logit_laplace"), losses.LogitLaplaceNLL)
    assert losses.get("l2").params_per_channel == 1
    assert losses.get("logit_laplace").params_per_channel == 2
    instance = losses.LogitLaplaceNLL(eps=0.2)
    assert losses.get(instance) is instance
    revived = losses.get(keras.saving.serialize_keras_object(instance))
    assert isinstance(revived, losses.LogitLaplaceNLL) and revived.eps == 0.2
    with pytest.raises(ValueError, match="loss_flavor.*'l1'"):
        losses.get("l1")


@pytest.mark.parametrize(
    "loss",
    [
        losses.GaussianNLL(data_variance=0.1, name="recon"),
        losses.LogitLaplaceNLL(eps=0.05, name="recon"),
    ],
)
def test_serialization_round_trip(loss, rng):
    config = keras.saving.serialize_keras_object(loss)
    revived = keras.saving.deserialize_keras_object(config)
    assert type(revived) is type(loss)
    assert revived.get_config() == loss.get_config()
    assert revived.name == "recon"
    channels = 3 * loss.params_per_channel
    images = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    output = rng.normal(size=(2, 4, 4, channels)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(revived(revived.in_map(images), output)),
        to_numpy(loss(loss.in_map(images), output)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("eps", [0.0, 0.5, 0.7, -0.1])
def test_logit_laplace_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match=f"eps={eps}"):
        losses.LogitLaplaceNLL(eps=eps)


@pytest.mark.parametrize("variance", [0.0, -1.0])
def test_gaussian_rejects_bad_variance(variance):
    with pytest.raises(ValueError, match=f"data_variance={variance}"):
        losses.GaussianNLL(data_variance=variance)


# Adversarial losses against NumPy.


def numpy_softplus(x):
    return np.logaddexp(0.0, x)


@pytest.fixture
def logits(rng):
    return (
        rng.normal(size=(4, 3, 3, 1)).astype("float32") * 2,
        rng.normal(size=(4, 3, 3, 1)).astype("float32") * 2 - 0.5,
    )


def test_hinge_losses_match_numpy(logits):
    real, fake = logits
    expected = 0.5 * (np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean())
    d_loss, g_loss = losses.adversarial_losses("hinge")
    np.testing.assert_allclose(to_numpy(d_loss(real, fake)), expected, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(g_loss(fake)), -fake.mean(), rtol=1e-6)


def test_non_saturating_losses_match_numpy(logits):
    real, fake = logits
    expected = 0.5 * (numpy_softplus(-real).mean() + numpy_softplus(fake).mean())
    d_loss, g_loss = losses.adversarial_losses("non_saturating")
    np.testing.assert_allclose(to_numpy(d_loss(real, fake)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(g_loss(fake)), numpy_softplus(-fake).mean(), rtol=1e-6
    )
    # Binary cross-entropy of real against fake, as Keras computes it.
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    reference = 0.5 * (
        to_numpy(bce(np.ones_like(real), real))
        + to_numpy(bce(np.zeros_like(fake), fake))
    )
    np.testing.assert_allclose(to_numpy(d_loss(real, fake)), reference, rtol=1e-5)


def test_generator_terms_are_zero_for_equal_logits(logits):
    _, fake = logits
    for name in losses.ADVERSARIAL_LOSSES:
        _, g_loss = losses.adversarial_losses(name)
        value = losses.generator_adversarial_terms(g_loss, fake, fake)
        assert float(to_numpy(value)) == 0.0


def test_lecam_regularization_matches_numpy(logits):
    real, fake = logits
    ema_real, ema_fake = 0.3, -0.2
    expected = (np.maximum(0, real - ema_fake) ** 2).mean() + (
        np.maximum(0, ema_real - fake) ** 2
    ).mean()
    value = losses.lecam_regularization(real, fake, ema_real, ema_fake)
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-6)


def test_unknown_adversarial_loss_names_the_argument():
    with pytest.raises(ValueError, match="disc_loss"):
        losses.adversarial_losses("wasserstein")
