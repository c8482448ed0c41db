"""keras_dvq.utils.loading: a user's `.keras` file loads, or one clear error."""

import keras
import pytest

from keras_dvq.models import TokenPrior
from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.loading import load_model_file


def test_loads_a_model_of_the_expected_class(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    loaded = load_model_file(str(tmp_path / "m.keras"), "--model", keras.Sequential)
    assert loaded.count_params() == model.count_params()


def test_missing_corrupt_and_foreign_files_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"^--prior .*nope.keras: not found\.$"):
        load_model_file(str(tmp_path / "nope.keras"), "--prior")
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    with pytest.raises(BadInput, match=r"corrupt.keras: cannot be loaded \(\w+"):
        load_model_file(str(tmp_path / "corrupt.keras"), "--prior")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(
        tmp_path / "dense.keras"
    )
    with pytest.raises(BadInput, match="expected a TokenPrior, got Sequential"):
        load_model_file(str(tmp_path / "dense.keras"), "--prior", TokenPrior)
