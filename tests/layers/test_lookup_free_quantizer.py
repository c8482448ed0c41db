import itertools

import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import LookupFreeQuantizer
from tests.testing import gradients


def identity_lfq(bits=3, **kwargs):
    """A built LFQ whose projection is the identity: latents == inputs."""
    kwargs = {"normalize_features": False, **kwargs}
    quantizer = LookupFreeQuantizer(codebook_bits=bits, **kwargs)
    quantizer.build((None, bits))
    quantizer.projection.kernel.assign(np.eye(bits, dtype="float32"))
    quantizer.projection.bias.assign(np.zeros(bits, dtype="float32"))
    return quantizer


def numpy_entropy_terms(z, inverse_temperature):
    """Per-position and batch entropies (nats) with every code enumerated."""
    bits = z.shape[-1]
    # Code j has bit i set (value +1) where (j >> i) & 1.
    codes = np.array(
        [[1.0 if (j >> i) & 1 else -1.0 for i in range(bits)] for j in range(2**bits)]
    )
    logits = 2 * inverse_temperature * z.astype("float64") @ codes.T
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_position = -(q * np.log(np.where(q > 0, q, 1))).sum(axis=1).mean()
    average = q.mean(axis=0)
    batch = -(average * np.log(np.where(average > 0, average, 1))).sum()
    return per_position, batch


def test_signs_and_token_bits():
    quantizer = identity_lfq(3)
    z = np.array([[0.5, -0.2, 0.1], [-1.0, -2.0, -3.0], [1.0, 2.0, -3.0]], "float32")
    quantized, tokens = quantizer(z)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(quantized), [[1, -1, 1], [-1, -1, -1], [1, 1, -1]]
    )
    # Bit i set where z_i > 0, the first dimension least significant.
    np.testing.assert_array_equal(ops.convert_to_numpy(tokens), [0b101, 0, 0b011])


def test_every_id_maps_to_its_sign_pattern_and_back():
    quantizer = identity_lfq(4)
    codes = ops.convert_to_numpy(quantizer.lookup(np.arange(16, dtype="int32")))
    assert {tuple(row) for row in codes} == set(
        itertools.product([-1.0, 1.0], repeat=4)
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(quantizer.tokenize(codes)), np.arange(16)
    )


def test_features_are_standardized_before_the_projection(rng):
    quantizer = LookupFreeQuantizer(codebook_bits=3, normalize_features=True)
    quantizer.build((None, 5))
    kernel = rng.normal(size=(5, 3)).astype("float32")
    quantizer.projection.kernel.assign(kernel)
    quantizer.projection.bias.assign(np.zeros(3, "float32"))
    # Non-negative features (a ReLU encoder's) with a common offset: without
    # the normalization the offset pushes every position's signs one way.
    x = (1.0 + np.abs(rng.normal(scale=0.1, size=(200, 5)))).astype("float32")
    centred = x.astype("float64") - x.mean(axis=-1, keepdims=True)
    standardized = centred / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    latents = standardized @ kernel
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.project(x)), latents, atol=1e-4
    )
    tokens = ops.convert_to_numpy(quantizer.tokenize(x))
    np.testing.assert_array_equal(tokens, (latents > 0) @ np.array([1, 2, 4]))
    assert len(quantizer.weights) == 2  # the projection's only
    config = quantizer.get_config()
    assert LookupFreeQuantizer.from_config(config).normalize_features
    assert LookupFreeQuantizer().normalize_features  # the default
    del config["normalize_features"]  # a file saved before the option
    assert not LookupFreeQuantizer.from_config(config).normalize_features


@pytest.mark.parametrize("inverse_temperature", [0.5, 3.0, 100.0])
def test_entropy_terms_match_numpy(inverse_temperature, rng):
    quantizer = identity_lfq(4, inverse_temperature=inverse_temperature)
    z = rng.normal(scale=0.5, size=(2, 5, 5, 4)).astype("float32")
    per_position, batch = quantizer.entropies(ops.convert_to_tensor(z))
    expected = numpy_entropy_terms(z.reshape(-1, 4), inverse_temperature)
    np.testing.assert_allclose(
        ops.convert_to_numpy(per_position), expected[0], atol=1e-4
    )
    np.testing.assert_allclose(ops.convert_to_numpy(batch), expected[1], atol=1e-4)


def test_latent_loss_combines_entropy_and_commitment(rng):
    quantizer = identity_lfq(
        3,
        entropy_loss_weight=0.3,
        diversity_gamma=0.7,
        commitment_cost=0.2,
        inverse_temperature=2.0,
    )
    z = rng.normal(size=(40, 3)).astype("float32")
    quantizer(z, training=True)
    per_position, batch = numpy_entropy_terms(z, 2.0)
    commitment = np.mean((z - np.sign(z)) ** 2)
    expected = 0.3 * (per_position - 0.7 * batch) + 0.2 * commitment
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.losses[0]), expected, rtol=1e-4
    )


def test_the_commitment_term_is_off_by_default_and_old_files_keep_theirs(rng):
    quantizer = identity_lfq(3, inverse_temperature=2.0)
    assert quantizer.commitment_cost == 0.0
    z = rng.normal(size=(40, 3)).astype("float32")
    quantizer(z, training=True)
    per_position, batch = numpy_entropy_terms(z, 2.0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.losses[0]),
        0.1 * (per_position - batch),
        rtol=1e-4,
    )
    config = quantizer.get_config()
    assert config["commitment_cost"] == 0.0  # saved, so it loads as trained
    del config["commitment_cost"]  # a config that does not name it
    assert LookupFreeQuantizer.from_config(config).commitment_cost == 0.25


def test_spread_batches_have_more_entropy_than_collapsed_ones(rng):
    quantizer = identity_lfq(4, inverse_temperature=5.0)
    spread = rng.normal(size=(256, 4)).astype("float32")
    collapsed = np.abs(spread) + 0.5  # every position on code 15
    _, spread_entropy = quantizer.entropies(ops.convert_to_tensor(spread))
    _, collapsed_entropy = quantizer.entropies(ops.convert_to_tensor(collapsed))
    assert ops.convert_to_numpy(spread_entropy) > 2.5  # of log(16) = 2.77
    assert ops.convert_to_numpy(collapsed_entropy) < 0.1


def test_gradient_of_the_output_is_straight_through(rng):
    quantizer = identity_lfq(3, entropy_loss_weight=0.0, commitment_cost=0.0)
    z = rng.normal(size=(8, 3)).astype("float32")
    weights = rng.normal(size=(8, 3)).astype("float32")
    (kernel_grad,) = gradients(
        lambda: ops.sum(
            quantizer(ops.convert_to_tensor(z))[0] * ops.convert_to_tensor(weights)
        ),
        [quantizer.projection.kernel],
    )
    np.testing.assert_allclose(kernel_grad, z.T @ weights, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"codebook_bits": 0}, "codebook_bits=0"),
        ({"codebook_bits": 17}, r"\[1, 16\].*codebook_bits=17"),
        ({"codebook_bits": 4.0}, "codebook_bits=4.0"),
        ({"entropy_loss_weight": -1}, "entropy_loss_weight=-1"),
        ({"diversity_gamma": -0.5}, "diversity_gamma=-0.5"),
        ({"inverse_temperature": 0}, "inverse_temperature=0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LookupFreeQuantizer(**kwargs)
