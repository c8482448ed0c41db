"""TokenPrior: causality, conditioning, sampling, cache, serialization."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.models import TokenPrior

K = 16
GRID = (4, 4)
CLASSES = 3
SMALL = {"hidden_dim": 16, "num_layers": 1, "num_heads": 2}


def logits_of(prior, tokens, class_ids=None):
    inputs = tokens if class_ids is None else {"tokens": tokens, "class_ids": class_ids}
    return ops.convert_to_numpy(prior(inputs))


@pytest.fixture(scope="module")
def trained():
    """A class-conditional prior that learned: class c -> every token is c
    (row-major order makes it one step of memory, the class token the rest)."""
    keras.utils.set_random_seed(0)
    prior = TokenPrior(K, GRID, num_classes=CLASSES, **SMALL)
    prior.compile(optimizer=keras.optimizers.Adam(1e-2))
    labels = np.arange(192) % CLASSES
    grids = np.broadcast_to(labels[:, None, None], (192, *GRID)).astype("int32")
    history = prior.fit(
        {"tokens": grids, "class_ids": labels}, batch_size=32, epochs=8, verbose=0
    )
    return prior, history.history["loss"]


def test_fit_learns_class_conditional_grids(trained):
    prior, losses = trained
    assert losses[-1] < 0.2 * losses[0], losses
    for class_id in range(CLASSES):
        grids = prior.generate(2, class_id=class_id, greedy=True)
        assert grids.shape == (2, *GRID) and grids.dtype == np.int32
        np.testing.assert_array_equal(grids, class_id)


def test_logits_do_not_depend_on_later_tokens(rng):
    prior = TokenPrior(K, GRID, **{**SMALL, "num_layers": 2})
    tokens = rng.integers(0, K, size=(2, *GRID))
    flat = logits_of(prior, tokens).reshape(2, 16, K)
    assert logits_of(prior, tokens).shape == (2, *GRID, K)
    for position in (0, 5, 15):
        changed = tokens.reshape(2, 16).copy()
        changed[:, position:] = (changed[:, position:] + 1) % K
        after = logits_of(prior, changed.reshape(2, *GRID)).reshape(2, 16, K)
        # Position i predicts token i from tokens < i only.
        np.testing.assert_allclose(
            after[:, : position + 1], flat[:, : position + 1], atol=1e-5
        )
        if position < 15:
            assert not np.allclose(after[:, position + 1 :], flat[:, position + 1 :])


def test_class_token_changes_the_logits(trained, rng):
    prior, _ = trained
    tokens = rng.integers(0, K, size=(1, *GRID))
    by_class = [logits_of(prior, tokens, np.array([c])) for c in range(CLASSES)]
    assert not np.allclose(by_class[0], by_class[1], atol=1e-3)
    with pytest.raises(ValueError, match="conditioned on 3 classes"):
        prior(tokens)


def test_sampling_is_deterministic_for_a_seed(trained):
    prior, _ = trained
    first = prior.generate(3, class_id=1, seed=7, temperature=3.0)
    again = prior.generate(3, class_id=1, seed=7, temperature=3.0)
    other = prior.generate(3, class_id=1, seed=8, temperature=3.0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 0 and first.max() < K


@pytest.mark.parametrize(
    "kwargs",
    [{"greedy": True}, {"seed": 3, "temperature": 2.0}, {"seed": 4, "top_k": 3}],
    ids=["greedy", "seeded", "top_k"],
)
def test_cached_and_uncached_decoding_give_the_same_tokens(rng, kwargs):
    keras.utils.set_random_seed(1)
    prior = TokenPrior(K, GRID, **{**SMALL, "num_layers": 2})
    cached = prior.generate(4, use_cache=True, **kwargs)
    uncached = prior.generate(4, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached, uncached)


def test_top_k_of_one_is_greedy():
    prior = TokenPrior(K, GRID, **SMALL)
    np.testing.assert_array_equal(
        prior.generate(2, top_k=1, seed=0), prior.generate(2, greedy=True)
    )


def test_depth_axis_flattens_after_columns(rng):
    prior = TokenPrior(K, (2, 2, 3), **SMALL)
    tokens = rng.integers(0, K, size=(2, 2, 2, 3))
    assert logits_of(prior, tokens).shape == (2, 2, 2, 3, K)
    # Slot order (row, column, depth): slot 4 is row 0, column 1, depth 1.
    np.testing.assert_array_equal(prior._coordinates[4], [0, 1, 1])
    assert prior.generate(2, seed=0).shape == (2, 2, 2, 3)


def test_keras_round_trip_keeps_config_logits_and_samples(trained, tmp_path, rng):
    prior, _ = trained
    revived = TokenPrior.from_config(prior.get_config())
    assert revived.get_config() == prior.get_config()
    path = tmp_path / "prior.keras"
    prior.save(path)
    loaded = keras.models.load_model(path)
    tokens = rng.integers(0, K, size=(2, *GRID))
    labels = np.array([0, 2])
    np.testing.assert_allclose(
        logits_of(loaded, tokens, labels), logits_of(prior, tokens, labels), atol=1e-6
    )
    np.testing.assert_array_equal(
        loaded.generate(2, class_id=2, seed=5), prior.generate(2, class_id=2, seed=5)
    )
    assert loaded.optimizer is not None  # compile state restored


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"token_shape": (4,)}, "token_shape"),
        ({"token_shape": (4, 0)}, "token_shape"),
        ({"num_classes": -1}, "num_classes"),
        ({"hidden_dim": 10, "num_heads": 4}, "num_heads"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenPrior(**{"vocabulary_size": K, "token_shape": GRID, **SMALL, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"class_id": 3}, r"class_id.*\[0, 3\)"),
        ({"class_id": -1}, "class_id"),
        ({"class_id": None}, "class_id"),
    ],
)
def test_bad_generate_arguments(trained, kwargs, message):
    prior, _ = trained
    with pytest.raises(ValueError, match=message):
        prior.generate(**{"num_samples": 1, "class_id": 0, **kwargs})


def test_unconditional_prior_refuses_a_class_id():
    prior = TokenPrior(K, GRID, **SMALL)
    with pytest.raises(ValueError, match="unconditional"):
        prior.generate(1, class_id=0)
