import itertools

import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import FiniteScalarQuantizer
from tests.testing import gradients


def identity_fsq(levels, **kwargs):
    """A built FSQ whose projection is the identity: latents == inputs (no
    feature normalization unless asked)."""
    kwargs = {"normalize_features": False, **kwargs}
    quantizer = FiniteScalarQuantizer(levels=levels, **kwargs)
    quantizer.build((None, len(levels)))
    quantizer.projection.kernel.assign(np.eye(len(levels), dtype="float32"))
    quantizer.projection.bias.assign(np.zeros(len(levels), dtype="float32"))
    return quantizer


def numpy_bound(z, levels, epsilon=1e-3):
    levels = np.asarray(levels, dtype="float64")
    half_l = (levels - 1) * (1 + epsilon) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return np.tanh(z + shift) * half_l - offset


def test_bound_matches_the_paper_formula(rng):
    levels = (8, 5, 4, 3)
    quantizer = identity_fsq(levels, normalize_latents=False)
    z = rng.normal(scale=2.0, size=(100, 4)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.bound(z)), numpy_bound(z, levels), atol=1e-5
    )


def test_quantized_values_are_the_levels_scaled_to_unit_range():
    quantizer = identity_fsq((8, 5))
    # Large latents saturate to the outermost levels, zero is the centre.
    z = np.array([[-50.0, -50.0], [50.0, 50.0], [0.0, 0.0]], "float32")
    quantized = ops.convert_to_numpy(quantizer(z)[0])
    np.testing.assert_allclose(quantized, [[-1, -1], [0.75, 1], [0, 0]])
    # Every value lies on the grid k / (L // 2).
    z = np.random.default_rng(0).normal(scale=3, size=(1000, 2)).astype("float32")
    quantized = ops.convert_to_numpy(quantizer(z)[0])
    for dim, level in enumerate((8, 5)):
        values = np.unique(quantized[:, dim] * (level // 2))
        np.testing.assert_allclose(
            values, np.arange(-(level // 2), (level - 1) // 2 + 1)
        )


def test_token_ids_are_mixed_radix_with_the_first_dimension_fastest():
    levels = (4, 3)
    quantizer = identity_fsq(levels)
    # Level indices (i0, i1) -> id i0 + 4 * i1; latents far out pick the
    # extreme levels, zero the middle one.
    z = np.array([[-50, -50], [50, -50], [-50, 50], [50, 50], [0, 0]], "float32")
    tokens = ops.convert_to_numpy(quantizer.tokenize(z))
    # Rounded values run from -2 to 1 (L=4) and -1 to 1 (L=3); zero is
    # index 2 and 1.
    np.testing.assert_array_equal(tokens, [0, 3, 8, 11, 2 + 4 * 1])


def test_every_id_maps_to_a_distinct_code_that_maps_back():
    levels = (8, 5, 5, 5)
    quantizer = identity_fsq(levels)
    ids = np.arange(1000, dtype="int32")
    codes = ops.convert_to_numpy(quantizer.lookup(ids))
    assert len(np.unique(codes, axis=0)) == 1000
    # The codes' level indices in mixed radix are the ids themselves.
    half_width = np.array(levels) // 2
    indices = np.round(codes * half_width + half_width).astype(int)
    np.testing.assert_array_equal(indices @ np.array([1, 8, 40, 200]), ids)
    grid = np.array(list(itertools.product(*[range(level) for level in levels])))
    assert {tuple(row) for row in indices} == {tuple(row) for row in grid}


def test_gradient_is_straight_through_the_rounding(rng):
    levels = (8, 5)
    quantizer = identity_fsq(levels, normalize_latents=False)
    z = rng.normal(size=(6, 2)).astype("float32")
    weights = rng.normal(size=(6, 2)).astype("float32")
    (kernel_grad,) = gradients(
        lambda: ops.sum(
            quantizer(ops.convert_to_tensor(z))[0] * ops.convert_to_tensor(weights)
        ),
        [quantizer.projection.kernel],
    )
    # d quantized / d z = d bound / d z / (L // 2), elementwise; with an
    # identity kernel the kernel gradient is z^T (weights * that).
    levels_array = np.array(levels, dtype="float64")
    half_l = (levels_array - 1) * 1.001 / 2
    shift = np.arctanh(np.where(levels_array % 2 == 0, 0.5, 0.0) / half_l)
    derivative = (1 - np.tanh(z + shift) ** 2) * half_l / (levels_array // 2)
    np.testing.assert_allclose(kernel_grad, z.T @ (weights * derivative), rtol=1e-4)


def test_latents_are_batch_normalized_before_the_bound(rng):
    quantizer = identity_fsq((8, 5), normalize_latents=True)
    # Small, off-centre latents, as an encoder's at initialization.
    z = rng.normal(loc=[0.1, -1.0], scale=[0.02, 0.5], size=(4000, 2))
    z = z.astype("float32")
    standardized = ops.convert_to_numpy(quantizer.project(z, training=True))
    np.testing.assert_allclose(standardized.mean(0), 0, atol=1e-3)
    # Unit variance up to BatchNormalization's epsilon (1e-5).
    expected_std = z.std(0) / np.sqrt(z.var(0) + 1e-5)
    np.testing.assert_allclose(standardized.std(0), expected_std, rtol=1e-3)
    _, tokens = quantizer(z, training=True)
    assert len(np.unique(ops.convert_to_numpy(tokens))) >= 30
    # Inference uses the moving averages, which training steps update (here
    # faster than the default momentum of 0.99).
    normalization = quantizer.normalization
    normalization.momentum = 0.9
    for _ in range(200):
        quantizer(z, training=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(normalization.moving_mean), z.mean(0), rtol=1e-2
    )
    inference = ops.convert_to_numpy(quantizer.project(z))
    np.testing.assert_allclose(inference.std(0), expected_std, rtol=2e-2)


def test_without_normalization_small_latents_all_round_to_the_centre(rng):
    # What the normalization is for: the DeepMind encoder's outputs start
    # near 0.02.
    quantizer = identity_fsq((8, 5, 5, 5), normalize_latents=False)
    z = rng.normal(scale=0.02, size=(500, 4)).astype("float32")
    _, tokens = quantizer(z, training=True)
    assert len(np.unique(ops.convert_to_numpy(tokens))) == 1
    assert not hasattr(quantizer, "normalization")


def numpy_feature_normalization(x, epsilon=1e-5):
    """Each row standardized over its channels, no scale or offset."""
    x = x.astype("float64")
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + epsilon)


def test_features_are_standardized_before_the_projection(rng):
    levels = (8, 5)
    quantizer = FiniteScalarQuantizer(
        levels=levels, normalize_latents=False, normalize_features=True
    )
    quantizer.build((None, 6))
    kernel = rng.normal(size=(6, 2)).astype("float32")
    bias = np.array([0.1, -0.2], "float32")
    quantizer.projection.kernel.assign(kernel)
    quantizer.projection.bias.assign(bias)
    # Small non-negative features, as a ReLU encoder's at initialization;
    # one position of zeros stays zeros (no division by zero).
    x = np.abs(rng.normal(scale=0.02, size=(50, 6))).astype("float32")
    x[0] = 0.0
    latents = numpy_feature_normalization(x) @ kernel + bias
    for training in (True, False):  # stateless: the same in both
        np.testing.assert_allclose(
            ops.convert_to_numpy(quantizer.project(x, training=training)),
            latents,
            atol=1e-4,
        )
    quantized, _ = quantizer(x, training=True)
    expected = np.round(numpy_bound(latents, levels)) / (np.array(levels) // 2)
    np.testing.assert_allclose(ops.convert_to_numpy(quantized), expected, atol=1e-6)
    # No weights: a file saved without the normalization has the same ones.
    assert len(quantizer.weights) == 2


def test_feature_normalization_is_in_the_config_and_off_for_old_ones():
    quantizer = FiniteScalarQuantizer()  # the defaults: features, no BatchNorm
    config = quantizer.get_config()
    assert (config["normalize_features"], config["normalize_latents"]) == (True, False)
    new = FiniteScalarQuantizer.from_config(config)
    assert new.normalize_features and not new.normalize_latents
    del config["normalize_features"]  # a file saved before the option
    old = FiniteScalarQuantizer.from_config(config)
    assert not old.normalize_features
    assert not hasattr(old, "feature_normalization")
    # Saved before either default changed: the BatchNorm, as trained then.
    del config["normalize_latents"]
    older = FiniteScalarQuantizer.from_config(config)
    assert older.normalize_latents and not older.normalize_features


@pytest.mark.parametrize(
    "levels, message",
    [
        ((), r"levels=\(\)"),
        ((8, 1), r"levels=\(8, 1\)"),
        ((8, 2.5), r"levels=\(8, 2.5\)"),
        ("855", "levels='855'"),
        ((2**16, 2**16), "2\\*\\*31"),
    ],
)
def test_bad_levels_raise(levels, message):
    with pytest.raises(ValueError, match=message):
        FiniteScalarQuantizer(levels=levels)
