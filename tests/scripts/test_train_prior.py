"""scripts/train_prior.py: a prior from token shards, its bits per token, and
one-line errors for bad input."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from keras_dvq.data.token_shards import TokenShardWriter
from keras_dvq.data.token_shards import write_token_shards
from tests.testing import assert_one_line_error
from tests.testing import load_script
from tests.testing import run_script

K = 16
GRID = (4, 4)
TINY = [
    "--hidden_dim", "16", "--num_layers", "1", "--num_heads", "2",
    "--batch_size", "16", "--max_steps", "12", "--learning_rate", "1e-2",
]  # fmt: skip


def structured_grids(count, seed):
    """Grids with a learnable structure: each row repeats a random id, and
    the label says which half of the vocabulary the ids come from."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count)
    rows = rng.integers(0, K // 2, size=(count, GRID[0])) + labels[:, None] * (K // 2)
    grids = np.repeat(rows[:, :, None], GRID[1], axis=2).astype(np.uint16)
    return grids, labels


def write_shards(out, grids, labels=None, file_format="npy", vocabulary=K, **kw):
    """Shards by the library writer; labels come with classes "a", "b", "c"."""
    names = None if labels is None else ["a", "b", "c"]
    write_token_shards(
        out, grids, labels, vocabulary_size=vocabulary, class_names=names,
        file_format=file_format, **kw,
    )  # fmt: skip
    return out


def write_incomplete(out, grids, labels):
    TokenShardWriter(out, K, class_names=["a", "b", "c"]).write(grids, labels)
    return out


@pytest.fixture(scope="module")
def script():
    return load_script("train_prior")


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    grids, labels = structured_grids(160, seed=0)
    val_grids, val_labels = structured_grids(40, seed=1)
    return {
        "train": write_shards(root / "train", grids, labels, shard_size=64),
        "val": write_shards(root / "val", val_grids, val_labels, "tfrecord"),
        "val_unlabelled": write_shards(root / "val_nl", val_grids),
        "val_k32": write_shards(root / "val_k32", val_grids, vocabulary=32),
        "val_grid": write_shards(root / "val_grid", val_grids.reshape(40, 2, 8)),
        "incomplete": write_incomplete(root / "inc", grids, labels),
    }


@pytest.fixture(scope="module")
def trained_run(script, shard_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "prior"
    flags = ["--tokens", str(shard_dirs["train"]), "--val_tokens"]
    assert script.main([*flags, str(shard_dirs["val"]), "--out", str(out), *TINY]) == 0
    return out


def test_writes_prior_metrics_curves_and_bits(trained_run):
    names = ("prior.keras", "metrics.csv", "training_curves.png", "bits_per_token.json")
    for name in names:
        assert (trained_run / name).stat().st_size > 0, name
    bits = json.loads((trained_run / "bits_per_token.json").read_text())
    assert bits["split"] == "validation" and bits["conditional"] is True
    assert bits["log2_vocabulary"] == math.log2(K)
    assert bits["steps"] == 12 and bits["num_tokens"] == 40 * 16
    # 8 ids of equal frequency per class: the unigram baselines are near 4 bits.
    assert 3.5 < bits["train_histogram_entropy"] <= 4
    assert 3.5 < bits["unigram_cross_entropy"] < 4.5
    assert 0 < bits["bits_per_token"] < bits["log2_vocabulary"] + 1
    header = (trained_run / "metrics.csv").read_text().splitlines()[0]
    assert "val_loss" in header


def test_prior_loads_after_importing_keras_dvq_alone(trained_run):
    program = (
        "import sys, keras, keras_dvq\n"
        "prior = keras.models.load_model(sys.argv[1])\n"
        "print(type(prior).__name__, prior.num_classes, prior.token_shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(trained_run / "prior.keras")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("TokenPrior 3 (4, 4)")


def test_without_validation_shards_bits_are_on_the_training_split(
    script, shard_dirs, tmp_path
):
    flags = ["--tokens", str(shard_dirs["train"]), "--out", str(tmp_path / "p")]
    assert script.main([*flags, *TINY, "--max_steps", "2", "--unconditional"]) == 0
    bits = json.loads((tmp_path / "p" / "bits_per_token.json").read_text())
    assert bits["split"] == "train" and bits["conditional"] is False


@pytest.mark.parametrize(
    "tokens, val_tokens, messages",
    [
        ("incomplete", None, ["--tokens", "incomplete shards (complete: false"]),
        ("train", "incomplete", ["--val_tokens", "incomplete shards"]),
        ("train", "val_k32", ["--val_tokens: tokens of vocabulary 32 on (4, 4)"]),
        ("train", "val_grid", ["--val_tokens: tokens of vocabulary 16 on (2, 8)"]),
        ("train", "val_unlabelled", ["--val_tokens", "its classes (None)"]),
    ],
)
def test_bad_shards_are_one_line_errors(
    script, shard_dirs, tmp_path, capsys, tokens, val_tokens, messages
):
    flags = ["--tokens", str(shard_dirs[tokens]), "--out", str(tmp_path / "p")]
    if val_tokens:
        flags += ["--val_tokens", str(shard_dirs[val_tokens])]
    result = run_script("train_prior", *flags, *TINY)
    assert_one_line_error(result, "train_prior", *messages)
    assert not (tmp_path / "p" / "prior.keras").exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--batch_size", "0"),
        ("--max_steps", "-1"),
        ("--hidden_dim", "0"),
        ("--learning_rate", "0"),
        ("--dropout", "1"),
    ],
)
def test_non_positive_sizes_exit_2(script, shard_dirs, tmp_path, capsys, flag, value):
    flags = ["--tokens", str(shard_dirs["train"]), "--out", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as exit_info:
        script.main([*flags, flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
