"""PatchDiscriminator: taming's NLayerDiscriminator shapes, sizes and files."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.layers import PatchDiscriminator
from keras_dvq.utils.errors import BadInput


def hand_count(n_layers, ndf, channels=3, normalized=True):
    """Parameters of taming's network by hand: conv + bias first, then
    bias-free convs with a scale and offset per channel, then conv + bias."""
    widths = [ndf] + [ndf * min(2**n, 8) for n in range(1, n_layers + 1)]
    count = 16 * channels * ndf + ndf
    for before, after in itertools.pairwise(widths):
        count += 16 * before * after + (2 * after if normalized else 0)
    return count + 16 * widths[-1] + 1


@pytest.mark.parametrize(
    "n_layers, ndf, size, logits",
    [(3, 64, 32, 2), (1, 8, 16, 6), (2, 8, 32, 6), (4, 4, 64, 2), (3, 4, 256, 30)],
)
def test_logit_maps_have_taming_sizes(n_layers, ndf, size, logits):
    discriminator = PatchDiscriminator(n_layers=n_layers, ndf=ndf)
    output = discriminator(np.zeros((2, size, size, 3), "float32"))
    assert tuple(output.shape) == (2, logits, logits, 1)
    assert discriminator.compute_output_shape((2, size, size, 3)) == output.shape


@pytest.mark.parametrize("n_layers, ndf", [(3, 64), (2, 8), (5, 4)])
def test_parameter_count_matches_a_hand_count(n_layers, ndf):
    discriminator = PatchDiscriminator(n_layers=n_layers, ndf=ndf)
    discriminator.build((None, 128, 128, 3))
    assert discriminator.count_params() == hand_count(n_layers, ndf)
    # Widths stop doubling at 8 * ndf.
    assert discriminator.convs[-2].filters == ndf * min(2**n_layers, 8)


def test_taming_default_has_its_parameter_count():
    # taming's NLayerDiscriminator(3, ndf=64, n_layers=3) has 2,765,633
    # trainable parameters (BatchNorm's running statistics are not).
    discriminator = PatchDiscriminator(normalization="batch")
    discriminator.build((None, 256, 256, 3))
    trainable = sum(int(np.prod(w.shape)) for w in discriminator.trainable_weights)
    assert trainable == hand_count(3, 64) == 2_765_633


def test_without_normalization_it_has_no_scales():
    discriminator = PatchDiscriminator(n_layers=2, ndf=8, normalization="none")
    discriminator.build((None, 32, 32, 3))
    assert discriminator.count_params() == hand_count(2, 8, normalized=False)


def test_weights_start_from_the_gan_initialization():
    discriminator = PatchDiscriminator(n_layers=3, ndf=64)
    discriminator.build((None, 64, 64, 3))
    kernel = ops.convert_to_numpy(discriminator.convs[2].kernel)
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    gamma = ops.convert_to_numpy(discriminator.norms[2].gamma)
    assert abs(gamma.mean() - 1.0) < 0.01 and 0.01 < gamma.std() < 0.03


def test_group_and_layer_normalization_judge_each_image_alone(rng):
    """Without running state, a batch's logits are each image's own."""
    images = rng.uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    for normalization in ("group", "layer"):
        discriminator = PatchDiscriminator(
            n_layers=2, ndf=8, normalization=normalization
        )
        together = ops.convert_to_numpy(discriminator(images, training=True))
        alone = ops.convert_to_numpy(discriminator(images[:1], training=True))
        np.testing.assert_allclose(together[:1], alone, atol=1e-5)
        assert not discriminator.non_trainable_weights


def test_group_counts_divide_the_widths():
    discriminator = PatchDiscriminator(n_layers=2, ndf=12)
    discriminator.build((None, 32, 32, 3))
    assert [norm.groups for norm in discriminator.norms if norm] == [8, 16]
    layer = PatchDiscriminator(n_layers=2, ndf=12, normalization="layer")
    layer.build((None, 32, 32, 3))
    assert [norm.groups for norm in layer.norms if norm] == [1, 1]


def test_config_and_weights_round_trip(tmp_path, rng):
    discriminator = PatchDiscriminator(
        n_layers=2, ndf=8, normalization="layer", name="critic"
    )
    images = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    expected = ops.convert_to_numpy(discriminator(images))
    model = keras.Sequential([keras.Input((32, 32, 3)), discriminator])
    path = str(tmp_path / "discriminator.keras")
    model.save(path)
    restored = keras.models.load_model(path).layers[0]
    assert isinstance(restored, PatchDiscriminator)
    assert restored.get_config() == discriminator.get_config()
    np.testing.assert_allclose(ops.convert_to_numpy(restored(images)), expected)


def test_a_discriminator_deeper_than_the_image_allows_is_bad_input():
    with pytest.raises(BadInput, match=r"`n_layers` \(--disc_layers\).*at most 3"):
        PatchDiscriminator(n_layers=4).build((None, 32, 32, 3))
    PatchDiscriminator(n_layers=3).build((None, 24, 24, 3))  # 24 // 8 = 3: fits
    with pytest.raises(BadInput, match="at most 2 for this size"):
        PatchDiscriminator(n_layers=3).build((None, 23, 23, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_layers": 0}, "n_layers"),
        ({"ndf": 0}, "ndf"),
        ({"normalization": "instance"}, "normalization"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchDiscriminator(**kwargs)
