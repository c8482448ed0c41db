import numpy as np
import pytest
from keras import ops

from keras_dvq.models import VQVAE
from keras_dvq.models import DalleDecoder
from keras_dvq.models import DalleEncoder
from keras_dvq.models import DalleResidualBlock
from tests.testing import random_inputs
from tests.testing import run_layer_test

ENCODER_KERNELS = (3, 3, 3, 1)
DECODER_KERNELS = (1, 3, 3, 3)


def conv_params(kernel, in_channels, out_channels):
    return kernel * kernel * in_channels * out_channels + out_channels


def block_params(in_channels, filters, kernels):
    hidden = filters // 4
    widths = (in_channels, hidden, hidden, hidden, filters)
    total = sum(conv_params(k, widths[i], widths[i + 1]) for i, k in enumerate(kernels))
    if in_channels != filters:
        total += conv_params(1, in_channels, filters)
    return total


def blocks(chain):
    return [layer for layer in chain if isinstance(layer, DalleResidualBlock)]


def test_encoder_layer(tmp_path):
    run_layer_test(
        DalleEncoder,
        {"n_hid": 4, "n_blk_per_group": 1, "output_channels": 8},
        input_shape=(2, 16, 16, 3),
        expected_output_shape=(2, 2, 2, 8),
        tmp_path=tmp_path,
    )


def test_decoder_layer(tmp_path):
    run_layer_test(
        DalleDecoder,
        {"n_hid": 4, "n_blk_per_group": 1, "output_channels": 6},
        input_shape=(2, 2, 2, 5),
        expected_output_shape=(2, 16, 16, 6),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("in_channels", [4, 8])
def test_residual_block_layer(in_channels, tmp_path):
    run_layer_test(
        DalleResidualBlock,
        {"filters": 8, "num_layers": 4, "kernel_sizes": DECODER_KERNELS},
        input_shape=(2, 4, 4, in_channels),
        expected_output_shape=(2, 4, 4, 8),
        tmp_path=tmp_path,
        expected_num_trainable_weights=8 if in_channels == 8 else 10,
    )


@pytest.mark.parametrize("size", [(16, 16), (32, 8)])
def test_stride_is_eight(size):
    encoder = DalleEncoder(n_hid=4, n_blk_per_group=1, output_channels=8)
    decoder = DalleDecoder(n_hid=4, n_blk_per_group=1, output_channels=3)
    assert encoder.stride == decoder.stride == 8
    height, width = size
    features = encoder(random_inputs((2, height, width, 3)))
    assert tuple(features.shape) == (2, height // 8, width // 8, 8)
    images = decoder(random_inputs((2, height // 8, width // 8, 5)))
    assert tuple(images.shape) == (2, height, width, 3)


@pytest.mark.parametrize("n_blk_per_group", [1, 2])
def test_post_gain_is_one_over_num_layers_squared(n_blk_per_group):
    encoder = DalleEncoder(n_hid=4, n_blk_per_group=n_blk_per_group)
    decoder = DalleDecoder(n_hid=4, n_blk_per_group=n_blk_per_group)
    num_layers = 4 * n_blk_per_group
    for block in blocks(encoder.chain) + blocks(decoder.chain):
        assert block.num_layers == num_layers
        assert block.post_gain == pytest.approx(1.0 / num_layers**2)
    assert len(blocks(encoder.chain)) == len(blocks(decoder.chain)) == num_layers


def test_post_gain_scales_the_residual_branch(rng):
    inputs = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    gain_one = DalleResidualBlock(filters=8, num_layers=1)
    gain_quarter = DalleResidualBlock(filters=8, num_layers=2)
    gain_one.build(inputs.shape)
    gain_quarter.build(inputs.shape)
    gain_quarter.set_weights(gain_one.get_weights())
    branch = ops.convert_to_numpy(gain_one(inputs)) - inputs
    assert np.abs(branch).max() > 1e-3
    np.testing.assert_allclose(
        ops.convert_to_numpy(gain_quarter(inputs)) - inputs,
        branch / 4,
        rtol=1e-4,
        atol=1e-6,
    )


def test_identity_path_only_when_channels_change():
    same = DalleResidualBlock(filters=8)
    same.build((None, 4, 4, 8))
    assert same.id_path is None
    wider = DalleResidualBlock(filters=8)
    wider.build((None, 4, 4, 4))
    assert wider.id_path is not None
    assert tuple(wider.id_path.kernel.shape) == (1, 1, 4, 8)

    encoder = DalleEncoder(n_hid=4, n_blk_per_group=2)
    encoder.build((None, 16, 16, 3))
    decoder = DalleDecoder(n_hid=4, n_blk_per_group=2)
    decoder.build((None, 2, 2, 5))
    # Encoder widths 1, 2, 4, 8 x n_hid after an n_hid conv: the first block
    # of groups 2-4 changes width. The decoder's first conv gives n_hid,
    # so the first block of every group (8, 4, 2, 1 x n_hid) changes width.
    with_id = [b.id_path is not None for b in blocks(encoder.chain)]
    assert with_id == [False, False, True, False, True, False, True, False]
    with_id = [b.id_path is not None for b in blocks(decoder.chain)]
    assert with_id == [True, False] * 4


def test_kernel_sizes_and_parameter_counts():
    n_hid, n_blk = 8, 2
    encoder = DalleEncoder(n_hid=n_hid, n_blk_per_group=n_blk, output_channels=16)
    decoder = DalleDecoder(n_hid=n_hid, n_blk_per_group=n_blk, output_channels=6)
    encoder.build((None, 16, 16, 3))
    decoder.build((None, 2, 2, 5))
    for block in blocks(encoder.chain):
        sizes = tuple(conv.kernel.shape[0] for conv in block.res_path)
        assert sizes == ENCODER_KERNELS
    for block in blocks(decoder.chain):
        sizes = tuple(conv.kernel.shape[0] for conv in block.res_path)
        assert sizes == DECODER_KERNELS

    expected = conv_params(7, 3, n_hid) + conv_params(1, 8 * n_hid, 16)
    channels = n_hid
    for width in (1, 2, 4, 8):
        for _ in range(n_blk):
            expected += block_params(channels, width * n_hid, ENCODER_KERNELS)
            channels = width * n_hid
    assert encoder.count_params() == expected

    expected = conv_params(1, 5, n_hid) + conv_params(1, n_hid, 6)
    channels = n_hid
    for width in (8, 4, 2, 1):
        for _ in range(n_blk):
            expected += block_params(channels, width * n_hid, DECODER_KERNELS)
            channels = width * n_hid
    assert decoder.count_params() == expected


def test_residual_block_config_round_trip():
    block = DalleResidualBlock(
        filters=16, num_layers=6, kernel_sizes=DECODER_KERNELS, name="res"
    )
    config = block.get_config()
    revived = DalleResidualBlock.from_config(config)
    assert revived.filters == 16
    assert revived.num_layers == 6
    assert tuple(revived.kernel_sizes) == DECODER_KERNELS
    assert revived.post_gain == pytest.approx(1 / 36)
    assert revived.get_config() == config


@pytest.mark.parametrize("loss_flavor, channels", [("l2", 3), ("logit_laplace", 6)])
def test_decoder_channels_follow_the_loss(loss_flavor, channels):
    model = VQVAE.from_flavors(
        enc_dec_flavor="dalle",
        loss_flavor=loss_flavor,
        n_hid=4,
        num_embeddings=16,
        embedding_dim=4,
    )
    assert model.decoder.output_channels == channels
    outputs = model(random_inputs((2, 16, 16, 3)))
    assert tuple(outputs["decoder_output"].shape) == (2, 16, 16, channels)
    assert tuple(outputs["tokens"].shape) == (2, 2, 2)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (DalleEncoder, {"n_hid": 0}, "n_hid=0"),
        (DalleEncoder, {"n_blk_per_group": 0}, "n_blk_per_group=0"),
        (DalleDecoder, {"output_channels": -6}, "output_channels=-6"),
        (DalleResidualBlock, {"filters": 0}, "filters=0"),
        (DalleResidualBlock, {"num_layers": 0}, "num_layers=0"),
        (DalleResidualBlock, {"kernel_sizes": (3, 3, 1)}, r"kernel_sizes=\(3, 3, 1\)"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
