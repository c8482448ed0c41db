"""tf.data pipelines: TensorFlow is a hard dependency, so these run under every
Keras backend (the pipelines feed `fit` on all of them)."""

import types

import numpy as np
import pytest
from tensorflow_datasets.core import download as tfds_download

from keras_dvq.data import datasets as data_module
from keras_dvq.data.datasets import class_names
from keras_dvq.data.datasets import count_images
from keras_dvq.data.datasets import load_dataset
from keras_dvq.data.datasets import load_image_folder
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.utils.errors import BadInput
from tests.testing import image_folder


@pytest.fixture(scope="module")
def sample_splits():
    return load_sample_patches("train"), load_sample_patches("validation")


def test_sample_sizes_dtype_and_determinism(sample_splits):
    train, validation = sample_splits
    assert train.shape[1:] == (32, 32, 3) and train.dtype == np.uint8
    assert len(train) >= 10_000 and len(validation) >= 2_000
    np.testing.assert_array_equal(validation, load_sample_patches("validation"))


def test_sample_splits_share_no_textured_patch(sample_splits):
    # The splits come from disjoint column ranges of each photograph; flat
    # patches (uniform background) can coincide by value, textured ones not.
    def textured_keys(patches):
        textured = patches[patches.reshape(len(patches), -1).std(axis=1) > 8]
        return {patch.tobytes() for patch in textured}

    train, validation = sample_splits
    assert not textured_keys(train) & textured_keys(validation)


def test_sample_rejects_unknown_split():
    with pytest.raises(ValueError, match="split.*'test'"):
        load_sample_patches("test")


def test_validation_pipeline_is_plain_and_complete(sample_splits):
    batches = list(load_dataset("sample", "validation", batch_size=1000))
    images = np.concatenate([np.asarray(b) for b in batches])
    np.testing.assert_array_equal(images, sample_splits[1])  # no shuffle/augment
    assert len(batches[-1]) == len(images) % 1000  # remainder kept


def test_training_pipeline_augments_and_reshuffles(sample_splits):
    dataset = load_dataset("sample", "train", batch_size=64, seed=3)
    first, second = (np.asarray(next(iter(dataset))) for _ in range(2))
    assert first.shape == (64, 32, 32, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)  # a new order every epoch
    raw = {patch.tobytes() for patch in sample_splits[0]}
    augmented = sum(patch.tobytes() not in raw for patch in first)
    assert augmented > 32  # most patches are shifted or flipped copies
    assert int(dataset.cardinality()) == len(sample_splits[0]) // 64


def test_image_size_resizes(sample_splits):
    batch = np.asarray(next(iter(load_dataset("sample", "validation", 8, 16))))
    assert batch.shape == (8, 16, 16, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": -1}, "image_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("sample", **kwargs)


def write_image_folder(root, rng):
    from PIL import Image

    (root / "nested").mkdir(parents=True)
    for index in range(20):
        pixels = rng.integers(0, 256, size=(40 + index, 50, 3), dtype=np.uint8)
        mode, folder = ("RGB", root) if index % 2 else ("RGBA", root / "nested")
        image = Image.fromarray(pixels).convert(mode)
        image.save(folder / f"image_{index:02d}.png")
    Image.fromarray(pixels[..., 0]).save(root / "gray.jpg")  # grayscale
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")


def test_image_folder_reads_converts_and_splits(tmp_path, rng):
    write_image_folder(tmp_path, rng)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable image file"):
        train = load_image_folder(str(tmp_path), "train", image_size=24)
    validation = load_image_folder(str(tmp_path), "validation", image_size=24)
    assert train.shape[1:] == (24, 24, 3) and train.dtype == np.uint8
    # 22 image files: every 10th (sorted) validates, one broken file trains.
    assert len(validation) == 2 and len(train) == 22 - 2 - 1
    dataset = load_dataset(f"folder:{tmp_path}", "validation", 4, image_size=24)
    np.testing.assert_array_equal(np.asarray(next(iter(dataset))), validation)


def test_image_folder_errors(tmp_path):
    with pytest.raises(BadInput, match="no such directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no readable"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_missing_tfds_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "_unreachable", lambda host: f"{host}: offline")
    with pytest.raises(BadInput) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "cifar10") in message
    assert "--data_dir" in message and "--dataset sample" in message
    assert "offline" in message


def test_unknown_dataset_name():
    message = "--dataset no_such_dataset: expected 'sample', 'folder:PATH' or a"
    for load in (load_dataset, class_names):
        with pytest.raises(BadInput, match=message) as error:
            load("no_such_dataset")
        assert "tensorflow-datasets has no 'no_such_dataset'" in str(error.value)


class FakeBuilder:
    """A tfds builder of a labelled image dataset that is not prepared."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def __init__(self, data_dir, failure=None):
        import tensorflow_datasets as tfds

        self.data_dir = f"{data_dir}/fake/1.0.0"
        self.failure = failure
        self.info = types.SimpleNamespace(
            features={"image": None, "label": tfds.features.ClassLabel(names=["x"])},
            splits={"train": None, "test": None},
        )

    def is_prepared(self):
        return False

    def download_and_prepare(self):
        raise self.failure


def fake_tfds(monkeypatch, builder=None, error=None):
    """tfds.builder returns `builder` or raises `error`; the network is up."""
    import tensorflow_datasets as tfds

    def make(name, data_dir=None):
        if error is not None:
            raise error
        return builder

    monkeypatch.setattr(tfds, "builder", make)
    monkeypatch.setattr(data_module, "_unreachable", lambda host: None)


@pytest.mark.parametrize(
    "error",
    [
        OSError("Network is unreachable"),
        ImportError("No module named 'apache_beam'"),
    ],
    ids=["network", "missing_dependency"],
)
def test_a_builder_that_fails_is_not_an_unknown_dataset(monkeypatch, error):
    # Also for labels: class_names used to answer None ("no labels") and the
    # tokens were written without them.
    fake_tfds(monkeypatch, error=error)
    for load in (load_dataset, class_names):
        with pytest.raises(BadInput) as raised:
            load("fake")
        message = str(raised.value)
        assert message.startswith("--dataset fake: tensorflow-datasets knows it")
        assert type(error).__name__ in message and str(error) in message
        assert "Unknown" not in message and raised.value.__cause__ is error


def test_a_builder_bug_keeps_its_traceback(monkeypatch):
    fake_tfds(monkeypatch, error=KeyError("features"))
    for load in (load_dataset, class_names):
        with pytest.raises(KeyError, match="features"):
            load("fake")


@pytest.mark.parametrize(
    "failure, words",
    [
        (OSError("No space left on device"), ["OSError: No space left on device"]),
        (
            tfds_download.DownloadError("HTTP 503"),
            ["downloading and preparing it failed", "DownloadError: HTTP 503"],
        ),
    ],
    ids=["disk_full", "download"],
)
def test_a_failed_download_says_so(monkeypatch, tmp_path, failure, words):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path, failure))
    with pytest.raises(BadInput) as raised:
        load_dataset("fake", data_dir=str(tmp_path))
    message = str(raised.value)
    assert message.startswith(f"--dataset fake: not prepared under {tmp_path}")
    assert all(word in message for word in words), message
    assert "--data_dir" in message and "--dataset sample" in message


def test_a_failed_preparation_bug_keeps_its_traceback(monkeypatch, tmp_path):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path, TypeError("a tfds bug")))
    with pytest.raises(TypeError, match="a tfds bug"):
        load_dataset("fake", data_dir=str(tmp_path))


def test_a_manual_download_is_not_attempted(monkeypatch, tmp_path):
    builder = FakeBuilder(tmp_path, AssertionError("must not download"))
    builder.MANUAL_DOWNLOAD_INSTRUCTIONS = "Download it from example.org."
    fake_tfds(monkeypatch, builder)
    with pytest.raises(BadInput, match="it needs a manual download"):
        load_dataset("fake", data_dir=str(tmp_path))


def test_a_labelled_tfds_dataset_has_its_class_names(monkeypatch, tmp_path):
    fake_tfds(monkeypatch, FakeBuilder(tmp_path))
    assert class_names("fake") == ["x"]


def test_count_images_of_batched_datasets(tmp_path):
    validation = load_dataset("sample", "validation", batch_size=128)
    assert count_images(validation) == 4250  # 33 full batches and one of 26
    folder = image_folder(tmp_path / "images", count=40)
    assert count_images(load_dataset(folder, "train", batch_size=8)) == 32
    assert count_images(load_dataset(folder, "validation", batch_size=3)) == 4
    assert count_images(validation.unbatch().batch(100)) is None  # unknown


def test_pipelines_run_without_autotuning():
    # Dropping an autotuned iterator waits for its tuning thread: seconds at
    # every validation of a `fit` (docs/benchmarks.md).
    for split in ("train", "validation"):
        dataset = load_dataset("sample", split, batch_size=4)
        assert dataset.options().autotune.enabled is False
