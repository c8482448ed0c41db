"""keras_dvq.atomic: a failed or killed write leaves the old file."""

import os

import keras
import numpy as np
import pytest

from keras_dvq.models import VQVAE
from keras_dvq.utils import atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as temporary:
            with open(temporary, "w") as file:
                file.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.csv"]
    atomic.write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_temporary_is_beside_the_target_and_keeps_its_suffix(tmp_path):
    with atomic.atomic_path(tmp_path / "model.keras") as temporary:
        # Same directory (atomic rename), suffix that model.save accepts.
        assert os.path.dirname(temporary) == str(tmp_path)
        assert temporary.endswith(".keras")
        assert not os.path.exists(tmp_path / "model.keras")
        open(temporary, "w").close()
    assert os.path.exists(tmp_path / "model.keras")


def test_save_model_round_trips(tmp_path):
    model = VQVAE.from_flavors(num_embeddings=8, embedding_dim=4, n_hid=8)
    model.build((None, 8, 8, 3))
    atomic.save_model(model, tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(restored)
        )


def test_directories_are_renamed_into_place(tmp_path):
    target = tmp_path / "tokenizer" / "1"
    target.parent.mkdir()
    with atomic.atomic_path(target) as temporary:
        os.makedirs(os.path.join(temporary, "variables"))
        open(os.path.join(temporary, "saved_model.pb"), "w").close()
    assert sorted(os.listdir(target)) == ["saved_model.pb", "variables"]
    assert os.listdir(target.parent) == ["1"]


def test_remove_temporaries_sweeps_only_temporaries(tmp_path):
    (tmp_path / f"{atomic.TEMPORARY_PREFIX}123-model.keras").write_text("torn")
    (tmp_path / f"{atomic.TEMPORARY_PREFIX}123-1").mkdir()
    (tmp_path / "model.keras").write_text("kept")
    atomic.remove_temporaries(tmp_path)
    assert os.listdir(tmp_path) == ["model.keras"]


def test_save_array_leaves_nothing_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "tokens.npy"
    atomic.save_array(path, np.arange(3))
    np.testing.assert_array_equal(np.load(path), np.arange(3))

    def torn_save(file, array):
        with open(file, "wb") as handle:
            handle.write(b"\x93NUMPY")  # a header, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        atomic.save_array(path, np.arange(5))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(path), np.arange(3))  # the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.npy"]
