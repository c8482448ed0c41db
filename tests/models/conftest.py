import keras
import pytest

from tests.models.tiny_vqvae import fitted_model
from tests.models.tiny_vqvae import make_images


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def trained(images):
    """A fitted VQ model shared by the read-only tests of a module."""
    keras.utils.set_random_seed(0)
    return fitted_model(images)
