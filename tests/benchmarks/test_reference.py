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
