"""benchmarks.throughput: the identity-bottleneck twin and the timing windows."""

import numpy as np
import pytest
from keras import ops

from benchmarks.throughput import IdentityBottleneck
from benchmarks.throughput import build_models
from benchmarks.throughput import distance_sizes
from benchmarks.throughput import window_rate


def test_identity_bottleneck_passes_the_projection_through():
    bottleneck = IdentityBottleneck(16, 4)
    features = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype("float32")
    projected, tokens = bottleneck(features)
    expected = bottleneck.projection(features)
    np.testing.assert_allclose(
        ops.convert_to_numpy(projected), ops.convert_to_numpy(expected)
    )
    assert tuple(tokens.shape) == (2, 3, 3)
    assert not ops.convert_to_numpy(tokens).any()


@pytest.mark.parametrize("name", ["deepmind", "dalle", "vqgan"])
def test_the_twin_differs_from_the_model_only_in_its_quantizer(name):
    config = {"num_embeddings": 16, "n_hid": 8, "image_size": 32}
    model, twin = build_models(name, config)
    assert isinstance(twin.quantizer, IdentityBottleneck)
    assert type(model.quantizer) is not IdentityBottleneck
    for part in ("encoder", "decoder"):
        ours, theirs = getattr(model, part), getattr(twin, part)
        assert type(ours) is type(theirs)
        assert ours.get_config() == theirs.get_config()
        assert ours.count_params() == theirs.count_params()
    assert type(model.reconstruction_loss) is type(twin.reconstruction_loss)


@pytest.mark.backend_independent
def test_window_rate_leaves_the_first_step_out():
    # Steps ending at 10 s (the first, with its set-up), 11, 12 and 13 s:
    # 3 batches of 8 in 3 s, whatever order the callback thread saw them in.
    assert window_rate([12.0, 10.0, 13.0, 11.0], batch_size=8) == pytest.approx(8.0)


def test_distance_sizes_of_the_blocked_search_and_of_gumbel_logits():
    model, _ = build_models(
        "deepmind_k8192_128", {"num_embeddings": 8192, "n_hid": 8, "image_size": 128}
    )
    sizes = distance_sizes(model, batch_size=32, image_size=128)
    # 32 images of 32x32 positions against 8,192 codes, searched in blocks.
    assert sizes["distance_matrix_mb"] == 32 * 32 * 32 * 8192 * 4 / 2**20
    block = model.quantizer.search_block_rows * 8192 * 4 / 2**20
    assert sizes["distance_block_mb"] == block < sizes["distance_matrix_mb"]
    # The Gumbel quantizer has no blocked search: its logits are one block.
    dalle, _ = build_models(
        "dalle", {"num_embeddings": 512, "n_hid": 8, "image_size": 32}
    )
    sizes = distance_sizes(dalle, batch_size=8, image_size=32)
    assert sizes["distance_matrix_mb"] == 8 * 4 * 4 * 512 * 4 / 2**20
    assert sizes["distance_block_mb"] == sizes["distance_matrix_mb"]
