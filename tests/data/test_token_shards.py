"""keras_dvq.data.token_shards: reading shards back, and refusing bad ones."""

import json

import numpy as np
import pytest

from keras_dvq.data.token_shards import check_same_tokens
from keras_dvq.data.token_shards import load_token_shards
from tests.testing import load_script

K = 16
GRID = (4, 4)


def write_shards(
    out, tokens, labels=None, file_format="npy", shard_size=10, vocabulary=K, **meta
):
    """Shards as scripts/tokenize_dataset.py writes them (its own writer)."""
    script = load_script("tokenize_dataset")
    out.mkdir(parents=True)
    shards = []
    for number, start in enumerate(range(0, len(tokens), shard_size)):
        part = tokens[start : start + shard_size]
        part_labels = None if labels is None else labels[start : start + shard_size]
        shard = {"file": f"tokens-{number:05d}.{file_format}", "count": len(part)}
        if file_format == "npy" and labels is not None:
            shard["labels_file"] = f"labels-{number:05d}.npy"
            np.save(out / shard["labels_file"], part_labels.astype(np.int32))
            part_labels = None
        script.write_shard(str(out / shard["file"]), part, file_format, part_labels)
        shards.append(shard)
    metadata = {
        "labels": labels is not None,
        "format": file_format,
        "dtype": "uint16",
        "vocabulary_size": vocabulary,
        "token_shape": list(tokens.shape[1:]),
        "shards": shards,
        "num_images": len(tokens),
        "complete": True,
    }
    if labels is not None:
        metadata.update(num_classes=3, class_names=["a", "b", "c"])
    metadata.update(meta)
    (out / "metadata.json").write_text(json.dumps(metadata))
    return out


@pytest.fixture
def grids(rng):
    return rng.integers(0, K, size=(25, *GRID)).astype(np.uint16)


@pytest.mark.parametrize("file_format", ["npy", "tfrecord"])
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no_labels"])
def test_shards_read_back_in_order(tmp_path, grids, file_format, with_labels):
    labels = np.arange(25) % 3 if with_labels else None
    out = write_shards(tmp_path / "t", grids, labels, file_format)
    shards = load_token_shards(str(out))
    assert shards.tokens.dtype == np.int32 and shards.tokens.shape == (25, *GRID)
    np.testing.assert_array_equal(shards.tokens, grids)
    assert shards.vocabulary_size == K and shards.token_shape == GRID
    if with_labels:
        np.testing.assert_array_equal(shards.labels, labels)
        assert shards.class_names == ["a", "b", "c"] and shards.num_classes == 3
    else:
        assert shards.labels is None and shards.num_classes == 0


def test_incomplete_shards_are_refused(tmp_path, grids):
    out = write_shards(tmp_path / "t", grids, complete=False)
    with pytest.raises(ValueError, match=r"--tokens .*incomplete shards \(complete"):
        load_token_shards(str(out), "--tokens")


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda out: (out / "tokens-00001.npy").unlink(),
            "tokens-00001.npy is missing",
        ),
        (lambda out: (out / "labels-00002.npy").unlink(), "labels of shard"),
        (
            lambda out: np.save(out / "tokens-00000.npy", np.zeros((3, 4, 4))),
            "metadata says 10 grids",
        ),
        (lambda out: (out / "metadata.json").unlink(), "not a token shard directory"),
    ],
    ids=["missing_shard", "missing_labels", "wrong_count", "no_metadata"],
)
def test_damaged_shards_are_refused(tmp_path, grids, damage, message):
    out = write_shards(tmp_path / "t", grids, np.arange(25) % 3)
    damage(out)
    with pytest.raises(ValueError, match=message):
        load_token_shards(str(out))


def test_ids_outside_the_vocabulary_are_refused(tmp_path, grids):
    out = write_shards(tmp_path / "t", grids, vocabulary=8)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 8\)"):
        load_token_shards(str(out))


def test_check_same_tokens(tmp_path, grids):
    shards = load_token_shards(str(write_shards(tmp_path / "t", grids)))
    check_same_tokens(shards, K, GRID, "--val_tokens", "the prior")
    with pytest.raises(ValueError, match=r"--val_tokens: tokens of vocabulary 16"):
        check_same_tokens(shards, 32, GRID, "--val_tokens", "the prior")
    with pytest.raises(ValueError, match=r"grids \(8, 8\)"):
        check_same_tokens(shards, K, (8, 8), "--val_tokens", "the prior")
