"""benchmarks.reference: the PyTorch loop of the original DeepMind VQ-VAE."""

import numpy as np
import pytest

from benchmarks.data import sample_images

torch = pytest.importorskip("torch")
from benchmarks.reference import ReferenceLoop  # noqa: E402
from benchmarks.reference import reference_model  # noqa: E402

# PyTorch code, the same under every Keras backend.
pytestmark = pytest.mark.backend_independent


def test_reference_model_mirrors_the_keras_deepmind_vqvae():
    from keras_dvq.models import VQVAE

    reference = reference_model()
    count = sum(p.numel() for p in reference.parameters())
    assert count == 695_491
    # The original recipe's model (gradient codebook) has the same weights.
    model = VQVAE.from_flavors(seed_faithful=True)
    model.build((None, 32, 32, 3))
    assert model.count_params() == count
    x = torch.as_tensor(np.zeros((2, 3, 32, 32), "float32"))
    x_hat, latent_loss, tokens = reference(x)
    assert tuple(x_hat.shape) == (2, 3, 32, 32)
    assert tuple(tokens.shape) == (2, 8, 8)
    assert latent_loss.ndim == 0


def test_reference_loop_lowers_its_loss_on_a_fixed_batch():
    loop = ReferenceLoop(n_hid=8, seed=0)
    batch = sample_images(16)
    losses = [loop.step(batch) for _ in range(20)]
    assert max(losses[-3:]) < 0.8 * losses[0]


def test_timed_window_counts_the_steps_after_the_first():
    loop = ReferenceLoop(n_hid=8, seed=0)
    calls = []
    loop.step = calls.append
    assert loop.timed_window(sample_images(10), batch_size=4) > 0
    # 10 images in batches of 4: two full batches, the rest left out.
    assert [len(batch) for batch in calls] == [4, 4]


def test_vq_model_config_is_what_the_converter_reads_back(tmp_path):
    pytest.importorskip("diffusers")
    from benchmarks.reference import vq_model_config
    from keras_dvq.export.diffusers_vqgan import model_arguments

    network = {
        "ch": 16,
        "ch_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attn_levels": (1,),
        "z_channels": 8,
        "norm_groups": 8,
    }
    config = vq_model_config(network, 64, 4, image_size=32)
    assert config["up_block_types"] == [
        "UpDecoderBlock2D",
        "AttnUpDecoderBlock2D",
        "UpDecoderBlock2D",
    ]
    arguments = model_arguments(config, tmp_path)
    assert arguments["num_embeddings"] == 64 and arguments["embedding_dim"] == 4
    read_back = dict(arguments["enc_dec_kwargs"])
    assert read_back.pop("mid_attention") is True
    assert read_back == network


def test_vq_model_loop_lowers_its_loss_on_a_fixed_batch():
    pytest.importorskip("diffusers")
    from benchmarks.reference import VQModelLoop

    network = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4}
    loop = VQModelLoop(network, 16, 4, seed=0)
    batch = sample_images(4, image_size=16)
    losses = [loop.step(batch) for _ in range(15)]
    assert max(losses[-3:]) < 0.8 * losses[0]
