"""keras_dvq.data.token_shards: the writer, reading shards back, and refusing
bad ones."""

import json

import numpy as np
import pytest

from keras_dvq.data import token_shards as token_shards_module
from keras_dvq.data.token_shards import TokenShardWriter
from keras_dvq.data.token_shards import check_same_tokens
from keras_dvq.data.token_shards import load_token_shards
from keras_dvq.data.token_shards import write_token_shards
from keras_dvq.utils.errors import BadInput

K = 16
GRID = (4, 4)
NAMES = ["a", "b", "c"]


def write_shards(out, tokens, labels=None, file_format="npy", shard_size=10):
    """Complete shards of `tokens` by the library writer, 10 grids a shard."""
    write_token_shards(
        out,
        tokens,
        labels,
        vocabulary_size=K,
        class_names=None if labels is None else NAMES,
        file_format=file_format,
        shard_size=shard_size,
    )
    return out


def edit_metadata(out, **changes):
    metadata = json.loads((out / "metadata.json").read_text())
    metadata.update(changes)
    (out / "metadata.json").write_text(json.dumps(metadata))


@pytest.fixture
def grids(rng):
    return rng.integers(0, K, size=(25, *GRID)).astype(np.uint16)


@pytest.mark.parametrize("file_format", ["npy", "tfrecord"])
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no_labels"])
def test_shards_read_back_in_order(tmp_path, grids, file_format, with_labels):
    labels = np.arange(25) % 3 if with_labels else None
    out = write_shards(tmp_path / "t", grids, labels, file_format)
    metadata = json.loads((out / "metadata.json").read_text())
    assert [shard["count"] for shard in metadata["shards"]] == [10, 10, 5]
    assert metadata["dtype"] == ("uint16" if file_format == "npy" else "int64")
    shards = load_token_shards(str(out))
    assert shards.tokens.dtype == np.int32 and shards.tokens.shape == (25, *GRID)
    np.testing.assert_array_equal(shards.tokens, grids)
    assert shards.vocabulary_size == K and shards.token_shape == GRID
    if with_labels:
        np.testing.assert_array_equal(shards.labels, labels)
        assert shards.class_names == NAMES and shards.num_classes == 3
    else:
        assert shards.labels is None and shards.num_classes == 0


def test_incomplete_shards_are_refused(tmp_path, grids):
    out = write_shards(tmp_path / "t", grids)
    edit_metadata(out, complete=False)
    with pytest.raises(BadInput, match=r"--tokens .*incomplete shards \(complete"):
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
    with pytest.raises(BadInput, match=message):
        load_token_shards(str(out))


def test_ids_outside_the_vocabulary_are_refused(tmp_path, grids):
    out = write_shards(tmp_path / "t", grids)
    edit_metadata(out, vocabulary_size=8)
    with pytest.raises(BadInput, match=r"outside the vocabulary \[0, 8\)"):
        load_token_shards(str(out))


def test_check_same_tokens(tmp_path, grids):
    shards = load_token_shards(str(write_shards(tmp_path / "t", grids)))
    check_same_tokens(shards, K, GRID, "--val_tokens", "the prior")
    with pytest.raises(BadInput, match=r"--val_tokens: tokens of vocabulary 16"):
        check_same_tokens(shards, 32, GRID, "--val_tokens", "the prior")
    with pytest.raises(BadInput, match=r"grids \(8, 8\)"):
        check_same_tokens(shards, K, (8, 8), "--val_tokens", "the prior")


def test_a_new_writer_continues_after_the_last_shard(tmp_path, grids, monkeypatch):
    out = tmp_path / "t"
    settings = {"dataset": "sample", "split": "train"}
    labels = np.arange(25) % 3
    write_file = token_shards_module.write_shard_file
    calls = []

    def killed_on_the_third_shard(path, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_file(path, *args)
        calls.append(path)

    monkeypatch.setattr(
        token_shards_module, "write_shard_file", killed_on_the_third_shard
    )
    writer = TokenShardWriter(out, K, "tfrecord", NAMES, settings)
    with pytest.raises(KeyboardInterrupt):
        for start in range(0, 25, 10):
            writer.write(grids[start : start + 10], labels[start : start + 10])
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json",
        "tokens-00000.tfrecord",
        "tokens-00001.tfrecord",
    ]  # fmt: skip: no torn third shard
    monkeypatch.setattr(token_shards_module, "write_shard_file", write_file)

    writer = TokenShardWriter(out, K, "tfrecord", NAMES, settings)
    assert writer.num_images == 20 and writer.num_shards == 2
    assert not writer.complete
    writer.write(grids[20:], labels[20:])
    assert writer.finish()["complete"] is True
    shards = load_token_shards(str(out))
    np.testing.assert_array_equal(shards.tokens, grids)
    np.testing.assert_array_equal(shards.labels, labels)


@pytest.mark.parametrize(
    "kwargs, differing",
    [
        ({"file_format": "tfrecord"}, "dtype, format"),
        ({"settings": {"split": "validation"}}, "split"),
        ({"class_names": NAMES}, "class_names, labels, num_classes"),
        ({"vocabulary_size": 32}, "vocabulary_size"),
    ],
)
def test_another_runs_directory_is_refused(tmp_path, grids, kwargs, differing):
    out = tmp_path / "t"
    TokenShardWriter(out, K, settings={"split": "train"}).write(grids)
    before = (out / "metadata.json").read_text()
    arguments = {"vocabulary_size": K, "settings": {"split": "train"}, **kwargs}
    with pytest.raises(BadInput, match=rf"--out {out} holds tokens of another run"):
        TokenShardWriter(out, **arguments)
    with pytest.raises(BadInput, match=rf"\(different {differing}\)"):
        TokenShardWriter(out, **arguments)
    assert (out / "metadata.json").read_text() == before


def test_a_setting_that_joined_later_continues_at_its_implied_value(tmp_path, grids):
    out = tmp_path / "t"
    # A directory begun before "image_size" was a setting.
    TokenShardWriter(out, K, settings={"split": "train"}).write(grids[:20])
    implied = {"image_size": 32}
    with pytest.raises(BadInput, match=r"\(different image_size\)"):
        TokenShardWriter(
            out,
            K,
            settings={"split": "train", "image_size": 64},
            implied_settings=implied,
        )
    writer = TokenShardWriter(
        out, K, settings={"split": "train", "image_size": 32}, implied_settings=implied
    )
    assert writer.num_images == 20
    writer.write(grids[20:])
    writer.finish()
    assert json.loads((out / "metadata.json").read_text())["image_size"] == 32
    np.testing.assert_array_equal(load_token_shards(str(out)).tokens, grids)


@pytest.mark.parametrize(
    "tokens, labels, message",
    [
        (np.full((2, 4, 4), 16), None, r"ids in \[0, 16\)"),
        (np.zeros((2, 4, 4), "float32"), None, "integer token grids"),
        (np.zeros((2, 2, 8), "int32"), None, r"grids of \(4, 4\)"),
        (np.zeros((2, 4, 4), "int32"), np.zeros(2), "labels"),
    ],
    ids=["outside_vocabulary", "floats", "other_grid", "labels_without_names"],
)
def test_writer_refuses_grids_it_cannot_write(tmp_path, grids, tokens, labels, message):
    writer = TokenShardWriter(tmp_path / "t", K)
    writer.write(grids[:3])
    with pytest.raises(ValueError, match=message) as error:
        writer.write(tokens, labels)
    assert not isinstance(error.value, BadInput)  # the caller's bug
    assert writer.num_shards == 1


def test_vocabularies_over_65536_are_written_as_int32(tmp_path):
    tokens = np.array([[[0, 70000]]])
    write_token_shards(tmp_path / "t", tokens, vocabulary_size=70001)
    assert np.load(tmp_path / "t" / "tokens-00000.npy").dtype == np.int32
    np.testing.assert_array_equal(load_token_shards(str(tmp_path / "t")).tokens, tokens)
