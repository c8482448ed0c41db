import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import ResidualVectorQuantizer
from keras_dvq.layers import VectorQuantizer
from tests.testing import gradients

K, D, STAGES = 8, 3, 3


def identity_rvq(**kwargs):
    """A built RVQ whose projection is the identity: latents == inputs."""
    quantizer = ResidualVectorQuantizer(
        num_quantizers=STAGES, num_embeddings=K, embedding_dim=D, **kwargs
    )
    quantizer.build((None, D))
    quantizer.projection.kernel.assign(np.eye(D, dtype="float32"))
    quantizer.projection.bias.assign(np.zeros(D, dtype="float32"))
    return quantizer


def codebooks(quantizer):
    return [ops.convert_to_numpy(stage.codebook) for stage in quantizer.stages]


def numpy_residual_quantization(z, books):
    residual, tokens, total = z.astype("float64"), [], np.zeros_like(z, "float64")
    for book in books:
        distances = ((residual[:, None, :] - book[None]) ** 2).sum(-1)
        ids = distances.argmin(axis=1)
        tokens.append(ids)
        total += book[ids]
        residual = residual - book[ids]
    return np.stack(tokens, axis=-1), total


def test_stages_quantize_successive_residuals(rng):
    quantizer = identity_rvq()
    z = rng.normal(size=(50, D)).astype("float32")
    quantized, tokens = quantizer(z)
    expected_tokens, expected_total = numpy_residual_quantization(
        z, codebooks(quantizer)
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(tokens), expected_tokens)
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantized), expected_total, atol=1e-5
    )


def test_each_stage_is_a_vector_quantizer_without_projection():
    quantizer = identity_rvq(use_ema=True, dead_code_threshold=1.0, seed=4)
    assert len(quantizer.stages) == STAGES
    for index, stage in enumerate(quantizer.stages):
        assert isinstance(stage, VectorQuantizer)
        assert not stage.use_projection and stage.use_ema
        assert stage.dead_code_threshold == 1.0 and stage.seed == 4 + index
        assert stage.codebook.shape == (K, D)


def test_more_stages_approximate_better(rng):
    z = rng.normal(size=(500, D)).astype("float32")
    quantizer = identity_rvq()
    quantizer.initialize_codes(z, seed=0)
    tokens = quantizer.tokenize(z)
    errors = [
        np.mean((ops.convert_to_numpy(quantizer.lookup(tokens[:, :depth])) - z) ** 2)
        for depth in range(1, STAGES + 1)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_kmeans_init_fits_each_stage_to_the_residuals_it_sees(rng):
    z = rng.normal(size=(400, D)).astype("float32")
    quantizer = identity_rvq(use_ema=True)
    centroids = quantizer.initialize_codes(z, seed=0)
    assert centroids.shape == (STAGES, K, D)
    books = codebooks(quantizer)
    np.testing.assert_allclose(books, centroids)
    # Stage 2's codes are centred where stage 1 leaves its residuals.
    tokens, _ = numpy_residual_quantization(z, books[:1])
    residuals = z - books[0][tokens[:, 0]]
    assert np.abs(books[1].mean(0) - residuals.mean(0)).max() < 0.1
    assert np.abs(books[1]).max() < np.abs(books[0]).max()


def test_latent_loss_is_the_sum_of_the_stage_losses(rng):
    quantizer = identity_rvq(commitment_cost=0.3, latent_loss_weight=2.0)
    z = rng.normal(size=(30, D)).astype("float32")
    quantizer(z, training=True)
    books = codebooks(quantizer)
    residual, expected = z.astype("float64"), 0.0
    for book in books:
        ids = ((residual[:, None] - book[None]) ** 2).sum(-1).argmin(1)
        # Gradient codebook: codebook term plus beta times commitment.
        expected += 2.0 * 1.3 * np.mean((residual - book[ids]) ** 2)
        residual = residual - book[ids]
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.losses[0]), expected, rtol=1e-4
    )


def test_output_gradient_is_one_straight_through_identity(rng):
    quantizer = identity_rvq(use_ema=True, latent_loss_weight=0.0)
    z = rng.normal(size=(10, D)).astype("float32")
    weights = rng.normal(size=(10, D)).astype("float32")
    (kernel_grad,) = gradients(
        lambda: ops.sum(
            quantizer(ops.convert_to_tensor(z))[0] * ops.convert_to_tensor(weights)
        ),
        [quantizer.projection.kernel],
    )
    # Not STAGES times the identity: the stages' outputs are not summed
    # with their own straight-through paths.
    np.testing.assert_allclose(kernel_grad, z.T @ weights, rtol=1e-5)


def test_quantizer_dropout_decodes_prefixes_in_training_only(rng):
    quantizer = identity_rvq(quantizer_dropout=0.99, seed=0)
    z = rng.normal(size=(200, D)).astype("float32")
    books = codebooks(quantizer)
    quantized, tokens = quantizer(z, training=True)
    quantized, tokens = ops.convert_to_numpy(quantized), ops.convert_to_numpy(tokens)
    prefixes = np.stack(
        [
            sum(books[s][tokens[:, s]] for s in range(depth))
            for depth in range(1, STAGES + 1)
        ]
    )
    matches = np.abs(prefixes - quantized[None]).max(-1) < 1e-5
    depth = matches.argmax(axis=0) + 1
    assert matches.any(axis=0).all()
    # Uniform over 1..3 stages: every depth occurs.
    assert set(np.unique(depth)) == {1, 2, 3}
    inference, _ = quantizer(z, training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(inference), prefixes[-1], atol=1e-5)


def test_config_round_trip_keeps_the_stage_arguments():
    quantizer = ResidualVectorQuantizer(
        num_quantizers=2, num_embeddings=16, use_ema=True, dead_code_threshold=2.0
    )
    revived = ResidualVectorQuantizer.from_config(quantizer.get_config())
    assert revived.get_config() == quantizer.get_config()
    assert revived.stages[1].dead_code_threshold == 2.0
    assert revived.stages[1].num_embeddings == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_quantizers": 0}, "num_quantizers=0"),
        ({"quantizer_dropout": 1.0}, "quantizer_dropout=1.0"),
        ({"quantizer_dropout": -0.1}, "quantizer_dropout=-0.1"),
        ({"dead_code_threshold": 1.0}, "dead_code_threshold=1.0.*use_ema=False"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualVectorQuantizer(**kwargs)


def test_tokens_keep_their_depth_through_a_functional_model(rng):
    inputs = keras.Input((4, 4, 6))
    quantized, tokens = ResidualVectorQuantizer(num_quantizers=5, embedding_dim=4)(
        inputs
    )
    assert tuple(tokens.shape) == (None, 4, 4, 5)
    assert tuple(quantized.shape) == (None, 4, 4, 4)
