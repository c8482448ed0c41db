"""The VQGAN encoder/decoder: shapes and stride, serialization, the blocks'
arithmetic, and training inside `VQVAE` through `from_flavors`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.models import VQVAE
from keras_dvq.models import VQGANAttentionBlock
from keras_dvq.models import VQGANDecoder
from keras_dvq.models import VQGANDownsample
from keras_dvq.models import VQGANEncoder
from keras_dvq.models import VQGANResidualBlock
from keras_dvq.models.flavors import encoder_decoder_arguments
from tests.testing import run_layer_test

SMALL = {"ch": 16, "num_res_blocks": 1, "z_channels": 4, "norm_groups": 8}


@pytest.mark.parametrize(
    "ch_mult, attn_levels, stride", [((1, 2), (1,), 2), ((1, 2, 2), (0, 2), 4)]
)
def test_encoder_and_decoder_shapes_and_stride(tmp_path, ch_mult, attn_levels, stride):
    kwargs = {**SMALL, "ch_mult": ch_mult, "attn_levels": attn_levels}
    encoder = run_layer_test(
        VQGANEncoder,
        kwargs,
        input_shape=(2, 16, 16, 3),
        expected_output_shape=(2, 16 // stride, 16 // stride, 4),
        tmp_path=tmp_path,
        run_fit=False,
    )
    assert encoder.stride == stride and encoder.output_channels == 4
    decoder = run_layer_test(
        VQGANDecoder,
        {**kwargs, "output_channels": 6},
        input_shape=(2, 16 // stride, 16 // stride, 5),
        expected_output_shape=(2, 16, 16, 6),
        tmp_path=tmp_path,
        run_fit=False,
    )
    assert decoder.stride == stride
    # Attention after every residual block of the named levels, and in the
    # middle; the decoder has one residual block more per level.
    for chain, per_level in ((encoder.chain, 1), (decoder.chain, 2)):
        attention = [layer for layer in chain if isinstance(layer, VQGANAttentionBlock)]
        assert len(attention) == 1 + per_level * len(attn_levels)
        blocks = [layer for layer in chain if isinstance(layer, VQGANResidualBlock)]
        assert len(blocks) == 2 + per_level * len(ch_mult)


def test_downsample_pads_bottom_and_right_only():
    layer = VQGANDownsample()
    images = np.arange(2 * 4 * 4 * 1, dtype="float32").reshape(2, 4, 4, 1)
    outputs = ops.convert_to_numpy(layer(images))
    kernel = ops.convert_to_numpy(layer.conv.kernel)[..., 0, 0]
    bias = ops.convert_to_numpy(layer.conv.bias)[0]
    padded = np.pad(images[..., 0], ((0, 0), (0, 1), (0, 1)))
    # Output (i, j) sees input rows 2i..2i+2: the top-left output starts at
    # pixel (0, 0), not at a zero row.
    expected = np.array(
        [
            [
                [(padded[n, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * kernel).sum()
                 for j in range(2)]
                for i in range(2)
            ]
            for n in range(2)
        ]
    ) + bias  # fmt: skip
    np.testing.assert_allclose(outputs[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_residual_block_shortcut_only_when_channels_change():
    same = VQGANResidualBlock(16, norm_groups=8)
    same.build((1, 4, 4, 16))
    grow = VQGANResidualBlock(32, norm_groups=8)
    grow.build((1, 4, 4, 16))
    assert same.shortcut is None
    assert tuple(grow.shortcut.kernel.shape) == (1, 1, 16, 32)
    # With zeroed second convs the block is its shortcut.
    inputs = np.random.default_rng(0).normal(size=(1, 4, 4, 16)).astype("float32")
    for block in (same, grow):
        block.conv2.kernel.assign(np.zeros(block.conv2.kernel.shape))
        block.conv2.bias.assign(np.zeros(block.conv2.bias.shape))
    np.testing.assert_allclose(ops.convert_to_numpy(same(inputs)), inputs)
    expected = inputs @ ops.convert_to_numpy(grow.shortcut.kernel)[0, 0]
    expected += ops.convert_to_numpy(grow.shortcut.bias)
    np.testing.assert_allclose(
        ops.convert_to_numpy(grow(inputs)), expected, rtol=1e-5, atol=1e-5
    )


def test_attention_is_single_head_softmax_over_positions():
    block = VQGANAttentionBlock(norm_groups=4)
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(2, 3, 3, 8)).astype("float32")
    outputs = ops.convert_to_numpy(block(inputs))

    def dense(layer, x):
        kernel = ops.convert_to_numpy(layer.kernel)
        return x @ kernel + ops.convert_to_numpy(layer.bias)

    normed = ops.convert_to_numpy(block.norm(inputs)).reshape(2, 9, 8)
    query, key, value = (
        dense(d, normed) for d in (block.query, block.key, block.value)
    )
    logits = query @ key.transpose(0, 2, 1) / np.sqrt(8)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = inputs + dense(block.out, weights @ value).reshape(2, 3, 3, 8)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


def test_encoder_works_on_doubled_inputs_and_decoder_halves():
    encoder = VQGANEncoder(ch_mult=(1,), attn_levels=(), **SMALL)
    decoder = VQGANDecoder(ch_mult=(1,), attn_levels=(), **SMALL)
    images = np.random.default_rng(2).random((1, 4, 4, 3)).astype("float32") - 0.5
    features = ops.convert_to_numpy(encoder(images))
    plain = images * 2.0
    for layer in encoder.chain:
        plain = layer(plain)
    np.testing.assert_allclose(features, ops.convert_to_numpy(plain), atol=1e-6)
    latents = np.ones((1, 4, 4, 4), "float32")
    plain = latents
    for layer in decoder.chain:
        plain = layer(plain)
    np.testing.assert_allclose(
        ops.convert_to_numpy(decoder(latents)), ops.convert_to_numpy(plain) * 0.5
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ch_mult": (1, 2), "attn_levels": (2,)}, "attn_levels"),
        ({"ch_mult": (1, 3), "norm_groups": 32}, "norm_groups"),
        ({"ch_mult": ()}, "ch_mult"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQGANEncoder(**{**SMALL, "attn_levels": (), **kwargs})


@pytest.mark.parametrize("vq_flavor, extra", [("vq", {}), ("fsq", {"levels": (5, 3)})])
def test_from_flavors_builds_and_fits(vq_flavor, extra, tmp_path):
    enc_dec_kwargs = {**SMALL, "ch_mult": (1, 2), "attn_levels": (1,)}
    if vq_flavor == "vq":
        extra = {"num_embeddings": 16, "embedding_dim": 4}
    model = VQVAE.from_flavors(
        vq_flavor=vq_flavor,
        enc_dec_flavor="vqgan",
        enc_dec_kwargs={**enc_dec_kwargs, "dropout": 0.1},
        **extra,
    )
    assert isinstance(model.encoder, VQGANEncoder)
    assert model.decoder.ch_mult == (1, 2) and model.decoder.dropout == 0.1
    assert model.stride == 2
    images = np.random.default_rng(3).random((4, 8, 8, 3)).astype("float32")
    model.build(images.shape)
    model.compile()
    before = [ops.convert_to_numpy(v) for v in model.encoder.trainable_weights]
    history = model.fit(images, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    after = [ops.convert_to_numpy(v) for v in model.encoder.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert model.encode(images).shape == (4, 4, 4)
    path = tmp_path / "model.keras"
    model.save(path)
    revived = keras.saving.load_model(path)
    np.testing.assert_allclose(
        revived.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


def test_enc_dec_kwargs_go_to_the_classes_that_take_them():
    encoder_kwargs, decoder_kwargs = encoder_decoder_arguments(
        "dalle", n_hid=8, enc_dec_kwargs={"n_blk_per_group": 1}
    )
    assert encoder_kwargs == decoder_kwargs == {"n_blk_per_group": 1, "n_hid": 8}
    assert encoder_decoder_arguments("deepmind") == ({}, {})
    with pytest.raises(ValueError, match="`n_hid` does not apply.*vqgan"):
        encoder_decoder_arguments("vqgan", n_hid=64)
    with pytest.raises(ValueError, match="`ch_mult` does not apply.*deepmind"):
        encoder_decoder_arguments("deepmind", enc_dec_kwargs={"ch_mult": (1, 2)})
    with pytest.raises(ValueError, match="output_channels"):
        encoder_decoder_arguments("vqgan", enc_dec_kwargs={"output_channels": 3})
