"""benchmarks.studies.prior_baselines on token grids built in memory."""

import numpy as np
import pytest

from benchmarks.studies import prior_baselines
from keras_dvq.data.token_shards import TokenShards

pytestmark = pytest.mark.backend_independent


def shards(tokens, labels, vocabulary_size=4):
    tokens = np.asarray(tokens, dtype=np.int32)
    return TokenShards(
        tokens=tokens,
        labels=np.asarray(labels, dtype=np.int32),
        vocabulary_size=vocabulary_size,
        token_shape=tokens.shape[1:],
        class_names=["a", "b"],
        metadata={},
    )


# Class 0 grids count 0 1 2 3 row-major, class 1 grids hold code 3 only.
TRAIN = shards([[[0, 1], [2, 3]]] * 6 + [[[3, 3], [3, 3]]] * 2, [0] * 6 + [1] * 2)
VAL = shards([[[0, 1], [2, 3]], [[3, 3], [3, 3]]], [0, 1])


def test_histogram_entropies_are_the_library_s_in_bits():
    rows = prior_baselines.baselines(TRAIN, VAL)
    assert rows["log2 K"] == 2.0
    # Validation: codes 0, 1, 2 once and 3 five times of 8.
    counts = np.array([1, 1, 1, 5]) / 8
    oracle = -(counts * np.log2(counts)).sum()
    assert rows["entropy of the validation histogram (oracle)"] == pytest.approx(
        oracle, abs=1e-5
    )
    # Training: 6 of each of 0, 1, 2 and 14 threes of 32.
    counts = np.array([6, 6, 6, 14]) / 32
    assert rows["entropy of the training histogram"] == pytest.approx(
        -(counts * np.log2(counts)).sum(), abs=1e-5
    )


def test_context_lowers_the_bits_per_token():
    rows = prior_baselines.baselines(TRAIN, VAL)
    # Knowing the class, or the previous token, beats the plain histogram.
    assert rows["unigram per class"] < rows["unigram (training histogram)"]
    assert (
        rows["bigram (previous token, row-major)"]
        < rows["unigram (training histogram)"]
    )


def test_main_prints_one_line_per_baseline(monkeypatch, capsys):
    splits = {"train": TRAIN, "val": VAL}
    monkeypatch.setattr(
        prior_baselines, "load_token_shards", lambda path, name: splits[path]
    )
    assert prior_baselines.main(["train", "val"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[0].split() == ["log2", "K", "2.000"]
