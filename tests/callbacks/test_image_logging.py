import numpy as np
import pytest
from PIL import Image

from keras_dvq.callbacks.image_logging import ReconstructionLogger
from keras_dvq.models import VQVAE


@pytest.mark.parametrize("size, scale", [(32, 4), (64, 2), (128, 1), (256, 1)])
def test_reconstructions_are_enlarged_to_about_128_px(size, scale):
    images = np.zeros((2, size, size, 3), "uint8")
    assert ReconstructionLogger(images, "out").scale == scale
    assert ReconstructionLogger(images, "out", scale=3).scale == 3


def test_a_256_px_grid_stays_at_its_own_size(tmp_path):
    model = VQVAE.from_flavors(num_embeddings=8, embedding_dim=4, n_hid=8)
    images = np.random.default_rng(0).integers(0, 255, (4, 256, 256, 3), "uint8")
    model.build(images.shape)
    logger = ReconstructionLogger(images, str(tmp_path), num_shown=4)
    logger.set_model(model)
    logger.write()
    with Image.open(tmp_path / "reconstructions.png") as picture:
        # Four 256-px columns (and gaps, labels, margins): about 1,100 px
        # wide, not the 4,100 of a 4x enlargement.
        assert 1024 <= picture.width < 1600, picture.size
