import os
import shutil
import tempfile

# One JAX compilation cache per test session, shared by the xdist workers and
# the scripts that tests start in subprocesses (they inherit the variables).
# The suite builds the same tiny models over and over, and on a CPU a JAX
# test spends most of its time compiling: even each eager op of a model's
# build is its own compilation of a quarter of a second, hence no minimum
# compile time. The session that made the cache removes it, so no run reuses
# another's. Set before Keras imports JAX.
_JAX_CACHE = "JAX_COMPILATION_CACHE_DIR"
_OWN_JAX_CACHE = None
if _JAX_CACHE not in os.environ:
    _OWN_JAX_CACHE = os.environ[_JAX_CACHE] = tempfile.mkdtemp(prefix="dvq-jax-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# What is left to compile, XLA compiles without LLVM's optimizations: a third
# of the time for the same HLO, on models too small for faster kernels to
# matter (measured: a DALL-E training step 59 s -> 21 s on JAX).
_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _XLA_FLAGS:
    os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS} --xla_backend_optimization_level=0"

# PyTorch's OpenMP threads spin while they wait: two xdist workers of two
# threads each on two cores made the heaviest PyTorch files (test_training,
# test_evaluate_script) take 111 s instead of 80 s. Each worker gets its
# share of the cores. (TensorFlow and XLA keep their own thread pools.)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and os.environ.get("KERAS_BACKEND") == "torch":
    _SHARE = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_SHARE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

SEED = 1337


# Tests of what no Keras backend touches (TensorFlow-side serving, file
# writing, script plumbing whose backend-specific parts other tests check on
# every backend) run once per CI, under TensorFlow: each of them costs the
# same on every backend, mostly in subprocesses.
ONE_BACKEND = "tensorflow"


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == ONE_BACKEND:
        return
    skip = pytest.mark.skip(reason=f"backend-independent: runs under {ONE_BACKEND}")
    for item in items:
        if item.get_closest_marker("backend_independent"):
            item.add_marker(skip)


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE:
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


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


# The shared trained files. Script and export tests need a trained tokenizer,
# its token shards and a prior; each test file used to train its own. They are
# made once per session (one session runs one backend), on first request.
TINY_TOKENIZER = {"embedding_dim": 4, "n_hid": 8}
TINY_VOCABULARY = 16
TINY_PRIOR = {"hidden_dim": 16, "num_layers": 1, "num_heads": 2}


@pytest.fixture(scope="session")
def sample_validation_images():
    """uint8 (4250, 32, 32, 3): the `sample` validation split, in order."""
    from keras_dvq.data.sample import load_sample_patches

    return load_sample_patches("validation")


@pytest.fixture(scope="session")
def tiny_tokenizer_factory(sample_validation_images, tmp_path_factory):
    """`make(num_embeddings=16)`: the path of a `model.keras` (a DeepMind
    VQVAE with 4-d codes, `n_hid=8`) fitted for 8 steps of 64 `sample`
    patches; one file per vocabulary size and session."""
    from keras_dvq.models import VQVAE

    paths = {}

    def make(num_embeddings=TINY_VOCABULARY):
        if num_embeddings not in paths:
            keras.utils.set_random_seed(SEED)
            model = VQVAE.from_flavors(num_embeddings=num_embeddings, **TINY_TOKENIZER)
            model.compile()
            model.fit(sample_validation_images[:512], batch_size=64, verbose=0)
            folder = tmp_path_factory.mktemp(f"tokenizer-{num_embeddings}")
            model.save(folder / "model.keras")
            paths[num_embeddings] = folder / "model.keras"
        return paths[num_embeddings]

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_factory):
    """The path of the session's trained `.keras` tokenizer (16 codes,
    32x32 images -> 8x8 token grids)."""
    return tiny_tokenizer_factory()


@pytest.fixture(scope="session")
def tiny_token_shards(tiny_tokenizer, tmp_path_factory):
    """npy shards of the `sample` validation split through `tiny_tokenizer`,
    written by the library (`tokenize_dataset`, 1000 images a shard: 5
    shards, the sample photographs as labels)."""
    from keras_dvq.export.token_dataset import tokenize_dataset

    out = tmp_path_factory.mktemp("shards") / "sample-validation"
    tokenize_dataset(
        out, "sample", "validation", model=tiny_tokenizer, shard_size=1000, verbose=0
    )
    return out


@pytest.fixture(scope="session")
def tiny_prior(tiny_token_shards, tmp_path_factory):
    """The path of a class-conditional `prior.keras` fitted for 8 steps on
    `tiny_token_shards` (vocabulary 16, 8x8 grids)."""
    from keras_dvq.data.token_shards import load_token_shards
    from keras_dvq.models import TokenPrior

    shards = load_token_shards(str(tiny_token_shards))
    keras.utils.set_random_seed(SEED)
    prior = TokenPrior(
        shards.vocabulary_size,
        shards.token_shape,
        num_classes=shards.num_classes,
        **TINY_PRIOR,
    )
    prior.compile()
    inputs = {"tokens": shards.tokens[:512], "class_ids": shards.labels[:512]}
    prior.fit(inputs, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("prior") / "prior.keras"
    prior.save(path)
    return path
