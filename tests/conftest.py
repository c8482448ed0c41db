import keras
import numpy as np
import pytest

SEED = 1337


@pytest.fixture(autouse=True)
def _seed_and_clean_session():
    """Fresh layer names, float32 policy and fixed seeds for every test.

    `free_memory=False` skips a full garbage collection, seconds per test
    once a few compiled models are alive.
    """
    keras.backend.clear_session(free_memory=False)
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(SEED)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def mixed_bfloat16():
    """Switches to the `mixed_bfloat16` policy for one test."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
