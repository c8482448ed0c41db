"""The quantizer contract, checked on every quantizer of the package."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.callbacks.kmeans_init import KMeansInit
from keras_dvq.layers import FiniteScalarQuantizer
from keras_dvq.layers import GumbelQuantizer
from keras_dvq.layers import LookupFreeQuantizer
from keras_dvq.layers import Quantizer
from keras_dvq.layers import ResidualVectorQuantizer
from keras_dvq.layers import VectorQuantizer
from keras_dvq.models import VQVAE
from tests.testing import run_layer_test

# (class, arguments, quantized size, token shape, vocabulary size)
QUANTIZERS = {
    "vq": (VectorQuantizer, {"num_embeddings": 8, "embedding_dim": 4}, 4, (), 8),
    "vq-ema": (
        VectorQuantizer,
        {"num_embeddings": 8, "embedding_dim": 4, "use_ema": True},
        4,
        (),
        8,
    ),
    "cosine": (
        VectorQuantizer,
        {"num_embeddings": 8, "embedding_dim": 4, "use_cosine_sim": True},
        4,
        (),
        8,
    ),
    "rotation": (
        VectorQuantizer,
        {"num_embeddings": 8, "embedding_dim": 4, "rotation_trick": True},
        4,
        (),
        8,
    ),
    "gumbel": (GumbelQuantizer, {"num_embeddings": 8, "embedding_dim": 4}, 4, (), 8),
    "fsq": (FiniteScalarQuantizer, {"levels": (4, 3, 2)}, 3, (), 24),
    "lfq": (LookupFreeQuantizer, {"codebook_bits": 5}, 5, (), 32),
    "rvq": (
        ResidualVectorQuantizer,
        {"num_quantizers": 3, "num_embeddings": 8, "embedding_dim": 4},
        4,
        (3,),
        8,
    ),
}
NAMES = sorted(QUANTIZERS)


def make(name, **overrides):
    cls, kwargs, *_ = QUANTIZERS[name]
    return cls(**{**kwargs, **overrides})


def features(rng, shape=(2, 4, 4, 6)):
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("name", NAMES)
def test_layer(name, tmp_path):
    cls, kwargs, dim, token_shape, _ = QUANTIZERS[name]
    layer = run_layer_test(
        cls,
        {**kwargs, "seed": 3},
        input_shape=(2, 4, 4, 6),
        expected_output_shape=((2, 4, 4, dim), (2, 4, 4, *token_shape)),
        tmp_path=tmp_path,
    )
    assert isinstance(layer, Quantizer)
    assert isinstance(layer.projection, keras.layers.Dense)
    assert layer.projection.name == "projection"


@pytest.mark.parametrize("name", NAMES)
def test_tokens_are_int32_ids_in_the_vocabulary(name, rng):
    _, _, _, token_shape, vocabulary_size = QUANTIZERS[name]
    quantizer = make(name)
    assert quantizer.vocabulary_size == vocabulary_size
    assert tuple(quantizer.token_shape) == token_shape
    _, tokens = quantizer(features(rng, (64, 2, 2, 6)) * 3.0, training=True)
    assert keras.backend.standardize_dtype(tokens.dtype) == "int32"
    tokens = ops.convert_to_numpy(tokens)
    assert tokens.min() >= 0 and tokens.max() < vocabulary_size
    assert len(np.unique(tokens)) > 1


@pytest.mark.parametrize("name", NAMES)
def test_lookup_inverts_tokenize_at_inference(name, rng):
    quantizer = make(name)
    inputs = features(rng)
    quantized, tokens = quantizer(inputs, training=False)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(quantizer.tokenize(inputs)), ops.convert_to_numpy(tokens)
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(quantizer.lookup(tokens)),
        ops.convert_to_numpy(quantized),
        rtol=1e-4,  # the rotation trick's forward pass rounds differently
        atol=1e-5,
    )


@pytest.mark.parametrize("name", NAMES)
def test_each_call_adds_one_latent_loss(name, rng):
    quantizer = make(name)
    inputs = features(rng)
    quantizer(inputs, training=True)
    quantizer(inputs, training=False)
    # Keras clears a layer's losses at each outermost call.
    assert len(quantizer.losses) == 1
    assert np.isfinite(ops.convert_to_numpy(quantizer.losses[0]))


@pytest.mark.parametrize("name", NAMES)
def test_return_loss_hands_back_the_loss_instead_of_adding_it(name, rng):
    quantizer = make(name)
    inputs = features(rng)
    quantized, tokens = quantizer(inputs, training=False)
    (added,) = quantizer.losses
    returned = quantizer(inputs, training=False, return_loss=True)
    assert len(returned) == 3
    assert not quantizer.losses
    for expected, value in zip((quantized, tokens, added), returned, strict=True):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(value), ops.convert_to_numpy(expected)
        )
    assert tuple(returned[2].shape) == ()


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_quantizes_in_float32(name, mixed_bfloat16, rng):
    mixed = make(name)
    reference = make(name, dtype="float32")
    inputs = (rng.integers(-32, 33, size=(2, 4, 4, 6)) / 16).astype("float32")
    mixed.build(inputs.shape)
    reference.build(inputs.shape)
    for source, target in zip(mixed.weights, reference.weights, strict=True):
        target.assign(ops.cast(source, target.dtype))
    # Projections exact in bfloat16 (multiples of 1/16 below 16), so only the
    # quantization's own precision could differ.
    kernel = rng.integers(-1, 2, size=tuple(mixed.projection.kernel.shape))
    for layer in (mixed, reference):
        layer.projection.kernel.assign(kernel.astype("float32"))
        layer.projection.bias.assign(np.zeros(layer.projection.bias.shape, "float32"))
    quantized, tokens = mixed(inputs)
    _, expected = reference(inputs)
    assert keras.backend.standardize_dtype(quantized.dtype) == "bfloat16"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(tokens), ops.convert_to_numpy(expected)
    )


@pytest.mark.parametrize(
    "flavor, kwargs, token_shape, vocabulary_size",
    [
        ("fsq", {"levels": (4, 3)}, (4, 4), 12),
        ("lfq", {"codebook_bits": 3}, (4, 4), 8),
        ("rvq", {"num_quantizers": 2, "num_embeddings": 8}, (4, 4, 2), 8),
    ],
)
def test_every_flavor_trains_encodes_decodes_and_round_trips(
    flavor, kwargs, token_shape, vocabulary_size, tmp_path, rng
):
    images = rng.uniform(size=(16, 16, 16, 3)).astype("float32")
    model = VQVAE.from_flavors(vq_flavor=flavor, n_hid=8, **kwargs)
    model.compile()
    logs = model.fit(images, batch_size=8, epochs=1, verbose=0).history
    assert 1 <= logs["cluster_use"][-1] <= vocabulary_size
    assert model.codebook_usage.num_embeddings == vocabulary_size
    tokens = model.encode(images)
    assert tokens.shape == (16, *token_shape)
    decoded = model.decode(tokens)
    np.testing.assert_allclose(decoded, model.predict(images, verbose=0), atol=1e-6)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.encode(images), tokens)
    np.testing.assert_array_equal(loaded.decode(tokens), decoded)


def test_decode_checks_the_depth_axis_of_residual_tokens(rng):
    model = VQVAE.from_flavors(vq_flavor="rvq", num_quantizers=2, n_hid=8)
    model.build((None, 16, 16, 3))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 2\).*\(1, 4, 4\)"):
        model.decode(np.zeros((1, 4, 4), "int32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 2\).*4, 4, 3"):
        model.decode(np.zeros((1, 4, 4, 3), "int32"))
    with pytest.raises(ValueError, match=r"ids in \[0, 512\)"):
        model.decode(np.full((1, 4, 4, 2), 512, "int32"))


@pytest.mark.parametrize("flavor", ["fsq", "lfq"])
def test_sizes_of_other_flavors_are_refused(flavor):
    with pytest.raises(ValueError, match=f"num_embeddings.*vq_flavor='{flavor}'"):
        VQVAE.from_flavors(vq_flavor=flavor, num_embeddings=512)


@pytest.mark.parametrize("flavor", ["fsq", "lfq", "gumbel"])
def test_kmeans_init_names_the_quantizers_it_applies_to(flavor, rng):
    images = rng.uniform(size=(8, 16, 16, 3)).astype("float32")
    model = VQVAE.from_flavors(vq_flavor=flavor, n_hid=8)
    model.compile()
    with pytest.raises(ValueError, match="VectorQuantizer or ResidualVectorQuantizer"):
        model.fit(images, epochs=1, callbacks=[KMeansInit(images)], verbose=0)


class SignQuantizer(Quantizer):
    """The contract's docstring example: 16 codes, the signs of 4 numbers."""

    def __init__(self, **kwargs):
        super().__init__(latent_dim=4, **kwargs)
        self.vocabulary_size, self.quantized_dim = 16, 4

    def quantize_latents(self, latents, training=False):
        signs = ops.where(latents > 0, 1.0, -1.0)
        quantized = latents + ops.stop_gradient(signs - latents)
        return quantized, self.tokens_of(latents), ops.zeros(())

    def tokens_of(self, latents):
        bits = ops.cast(latents > 0, "int32")
        return ops.sum(bits * ops.array([1, 2, 4, 8], "int32"), axis=-1)

    def codes_of(self, tokens):
        bits = (tokens[..., None] // ops.array([1, 2, 4, 8], "int32")) % 2
        return ops.cast(2 * bits - 1, "float32")


def test_a_new_quantizer_plugs_into_vqvae_through_the_contract(rng):
    from keras_dvq.models.deepmind import DeepMindDecoder
    from keras_dvq.models.deepmind import DeepMindEncoder

    model = VQVAE(
        DeepMindEncoder(n_hid=8),
        SignQuantizer(),
        DeepMindDecoder(n_hid=8, output_channels=3),
    )
    model.compile()
    images = rng.uniform(size=(8, 16, 16, 3)).astype("float32")
    logs = model.fit(images, batch_size=8, epochs=1, verbose=0).history
    assert 1 <= logs["cluster_use"][0] <= 16
    tokens = model.encode(images)
    assert tokens.shape == (8, 4, 4) and tokens.max() < 16
    np.testing.assert_allclose(
        model.decode(tokens), model.predict(images, verbose=0), atol=1e-6
    )


def test_the_base_class_names_what_a_subclass_lacks():
    quantizer = Quantizer(latent_dim=2)
    for method, argument in (
        (quantizer.quantize_latents, np.zeros((1, 2), "float32")),
        (quantizer.tokens_of, np.zeros((1, 2), "float32")),
        (quantizer.codes_of, np.zeros((1,), "int32")),
    ):
        with pytest.raises(NotImplementedError, match=method.__name__):
            method(argument)


def test_without_projection_inputs_must_have_the_latent_size():
    quantizer = VectorQuantizer(8, 4, use_projection=False)
    assert isinstance(quantizer.projection, keras.layers.Identity)
    with pytest.raises(ValueError, match=r"latent_dim=4.*\(None, 6\)"):
        quantizer.build((None, 6))
