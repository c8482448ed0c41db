import numpy as np
import pytest
from keras import ops

from keras_dvq.models import VQVAE
from keras_dvq.models import DeepMindDecoder
from keras_dvq.models import DeepMindEncoder
from keras_dvq.models import DeepMindResidualBlock
from tests.testing import random_inputs
from tests.testing import run_layer_test


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_encoder_layer(tmp_path):
    run_layer_test(
        DeepMindEncoder,
        {"n_hid": 8},
        input_shape=(2, 16, 16, 3),
        expected_output_shape=(2, 4, 4, 16),
        tmp_path=tmp_path,
    )


def test_decoder_layer(tmp_path):
    run_layer_test(
        DeepMindDecoder,
        {"n_hid": 8, "output_channels": 6},
        input_shape=(2, 4, 4, 4),
        expected_output_shape=(2, 16, 16, 6),
        tmp_path=tmp_path,
    )


def test_residual_block_layer(tmp_path):
    run_layer_test(
        DeepMindResidualBlock,
        {"hidden_channels": 4},
        input_shape=(2, 4, 4, 8),
        expected_output_shape=(2, 4, 4, 8),
        tmp_path=tmp_path,
        expected_num_trainable_weights=4,
    )


@pytest.mark.parametrize("size", [(16, 16), (32, 24), (8, 40)])
def test_stride_is_four(size):
    encoder = DeepMindEncoder(n_hid=8)
    decoder = DeepMindDecoder(n_hid=8, output_channels=3)
    assert encoder.stride == decoder.stride == 4
    assert encoder.output_channels == 16
    height, width = size
    features = encoder(random_inputs((2, height, width, 3)))
    assert tuple(features.shape) == (2, height // 4, width // 4, 16)
    images = decoder(random_inputs((2, height // 4, width // 4, 5)))
    assert tuple(images.shape) == (2, height, width, 3)


def test_residual_block_adds_the_bottleneck_branch(rng):
    block = DeepMindResidualBlock(hidden_channels=4)
    inputs = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    block.build(inputs.shape)
    block.conv_out.kernel.assign(np.zeros((1, 1, 4, 8), "float32"))
    block.conv_out.bias.assign(np.zeros(8, "float32"))
    # Without the branch the block is relu(x).
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(inputs)), np.maximum(inputs, 0), atol=1e-6
    )
    block.conv_out.bias.assign(np.ones(8, "float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(inputs)), np.maximum(inputs + 1, 0), atol=1e-6
    )
    assert tuple(block.conv_in.kernel.shape) == (3, 3, 8, 4)


def test_residual_block_config_round_trip():
    block = DeepMindResidualBlock(hidden_channels=12, name="res")
    revived = DeepMindResidualBlock.from_config(block.get_config())
    assert revived.hidden_channels == 12
    assert revived.get_config() == block.get_config()


def test_parameter_counts_of_the_original_model():
    encoder = DeepMindEncoder(n_hid=64)
    decoder = DeepMindDecoder(n_hid=64, output_channels=3)
    encoder.build((None, 32, 32, 3))
    decoder.build((None, 8, 8, 64))
    assert encoder.count_params() == 364_160
    assert decoder.count_params() == 290_307


ORIGINAL_TRAINABLE = {"vq": 695_491, "gumbel": 753_283}


@pytest.mark.parametrize("vq_flavor", ["vq", "gumbel"])
def test_parameter_counts_of_the_original_vqvae(vq_flavor):
    model = VQVAE.from_flavors(
        vq_flavor=vq_flavor,
        enc_dec_flavor="deepmind",
        n_hid=64,
        num_embeddings=512,
        embedding_dim=64,
        seed_faithful=True,
    )
    model.build((None, 32, 32, 3))
    assert count(model.trainable_weights) == ORIGINAL_TRAINABLE[vq_flavor]
    names = sorted(v.path.split("/")[-1] for v in model.non_trainable_weights)
    if vq_flavor == "gumbel":
        # Scalars that schedules and callbacks set, the step count the
        # in-graph schedules read, and the balancing offset of the logits.
        assert names == [
            "argmax_codes",
            "diversity_weight",
            "iterations",
            "kl_weight",
            "logit_offset",
            "temperature",
        ]
        assert count(model.non_trainable_weights) == 5 + 512
    else:
        assert names == []


def test_parameter_counts_of_the_default_ema_vqvae():
    model = VQVAE.from_flavors(
        enc_dec_flavor="deepmind", n_hid=64, num_embeddings=512, embedding_dim=64
    )
    model.build((None, 32, 32, 3))
    codebook = 512 * 64
    # The EMA codebook leaves the gradient path; its statistics join it.
    assert count(model.trainable_weights) == ORIGINAL_TRAINABLE["vq"] - codebook
    assert count(model.non_trainable_weights) == codebook + 512 + codebook


@pytest.mark.parametrize("loss_flavor, channels", [("l2", 3), ("logit_laplace", 6)])
def test_decoder_channels_follow_the_loss(loss_flavor, channels):
    model = VQVAE.from_flavors(
        enc_dec_flavor="deepmind",
        loss_flavor=loss_flavor,
        n_hid=8,
        num_embeddings=16,
        embedding_dim=4,
    )
    assert model.decoder.output_channels == channels
    outputs = model(random_inputs((2, 16, 16, 3)))
    assert tuple(outputs["decoder_output"].shape) == (2, 16, 16, channels)
    assert tuple(outputs["reconstruction"].shape) == (2, 16, 16, 3)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (DeepMindEncoder, {"n_hid": 0}, "n_hid=0"),
        (DeepMindDecoder, {"n_hid": -2}, "n_hid=-2"),
        (DeepMindDecoder, {"output_channels": 0}, "output_channels=0"),
        (DeepMindResidualBlock, {"hidden_channels": 1.5}, "hidden_channels=1.5"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
