"""Files written by earlier versions of keras-dvq still load and work.

tests/fixtures/saved/ holds tiny models of every flavor, a step backup and a
prior written at commit 84692d8, before the package was laid out by role
(`make_fixtures.py` there says how). Each must load after `import keras_dvq`
alone, give the tokens it gave then, and keep training.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_dvq  # noqa: F401  (registers every class a file names)
from keras_dvq.callbacks.step_backup import StepBackup

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "saved")
with open(os.path.join(FIXTURES, "expected.json")) as _file:
    EXPECTED = json.load(_file)


def fixture_images(count=8, size=32, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, size, size, 3))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_model_loads_encodes_and_trains(name):
    model = keras.models.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    x = fixture_images().astype("float32")
    tokens = keras.ops.convert_to_numpy(model.encode(x[:2]))
    np.testing.assert_array_equal(tokens, EXPECTED[name]["tokens"])
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert step == EXPECTED[name]["optimizer_iterations"]
    history = model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == step + 1


def test_old_backup_restores_into_todays_model(tmp_path):
    model = keras.models.load_model(os.path.join(FIXTURES, "vqvae.keras"))
    fresh = keras.models.clone_model(model)
    fresh.compile(
        optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config())
    )
    fresh.build((None, 32, 32, 3))
    backup = StepBackup(os.path.join(FIXTURES, "backup"))
    assert backup.restore(fresh) == (0, 1)
    for old, new in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new)
        )


def test_old_prior_loads_and_scores():
    prior = keras.models.load_model(os.path.join(FIXTURES, "prior.keras"))
    tokens = np.random.default_rng(0).integers(0, 16, size=(4, 8, 8))
    labels = np.arange(4) % 3
    loss = prior.evaluate({"tokens": tokens, "class_ids": labels}, verbose=0)
    assert np.isfinite(loss) and 0 < loss < 2 * np.log(16)
