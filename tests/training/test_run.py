import numpy as np
import pytest

from keras_dvq.training import builders
from keras_dvq.training.flags import parse_train_config
from keras_dvq.training.run import spread_images

tf = pytest.importorskip("tensorflow")


def numbered_batches(count, batch_size, labelled=False):
    """Images whose every pixel holds the image's index."""
    images = np.arange(count, dtype="float32")[:, None, None, None]
    images = np.broadcast_to(images, (count, 2, 2, 3))
    data = (images, np.zeros(count)) if labelled else images
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def indices(images):
    return images[:, 0, 0, 0].astype(int).tolist()


def test_spread_images_keeps_every_kth_image_of_the_scanned_batches():
    images = spread_images(numbered_batches(80, 8), count=20, max_batches=5)
    assert indices(images) == list(range(0, 40, 2))


def test_spread_images_reads_pairs_and_unknown_lengths():
    dataset = numbered_batches(30, 4, labelled=True)
    assert indices(spread_images(dataset, count=10, max_batches=64)) == list(
        range(0, 30, 3)
    )
    unknown = numbered_batches(30, 4).filter(lambda batch: True)
    assert int(unknown.cardinality()) < 0
    assert indices(spread_images(unknown, count=100, max_batches=3)) == list(range(12))


def test_shuffle_buffer_flag_reaches_the_loader_but_not_the_run_record(monkeypatch):
    argv = ["--out", "runs/x", "--dataset", "sample", "--shuffle_buffer", "256"]
    config = parse_train_config(argv)
    assert config.shuffle_buffer == 256
    # Like --data_dir, it may change when a run resumes.
    assert "shuffle_buffer" not in config.run_record()
    calls = []
    load = builders.load_dataset

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("shuffle_buffer"))
        return load(*args, **kwargs)

    monkeypatch.setattr(builders, "load_dataset", recording_load)
    builders.load_splits("sample", 16, shuffle_buffer=256)
    assert calls == [256, None]  # training split only
