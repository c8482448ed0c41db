import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.metrics import CodebookUsage


def result(metric):
    return {key: float(ops.convert_to_numpy(v)) for key, v in metric.result().items()}


def test_uniform_use_of_half_the_codebook():
    usage = CodebookUsage(num_embeddings=8)
    usage.update_state(np.array([[0, 2], [4, 6]] * 3, "int32"))
    values = result(usage)
    assert set(values) == {"perplexity", "cluster_use"}
    assert values["perplexity"] == pytest.approx(4.0, rel=1e-6)
    assert values["cluster_use"] == 4.0


def test_perplexity_of_a_skewed_histogram():
    usage = CodebookUsage(num_embeddings=8)
    tokens = np.array([0] * 6 + [1] * 3 + [5], "int32").reshape(2, 5)
    usage.update_state(tokens)
    probs = np.array([0.6, 0.3, 0.1])
    expected = np.exp(-(probs * np.log(probs)).sum())
    values = result(usage)
    assert values["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert values["cluster_use"] == 3.0


def test_histogram_accumulates_over_batches():
    usage = CodebookUsage(num_embeddings=8)
    usage.update_state(np.zeros((2, 4, 4), "int32"))
    assert result(usage)["perplexity"] == pytest.approx(1.0)
    usage.update_state(np.ones((2, 4, 4), "int32"))
    values = result(usage)
    # The whole-epoch histogram is half code 0, half code 1; the mean of the
    # per-batch perplexities would be 1.
    assert values["perplexity"] == pytest.approx(2.0, rel=1e-6)
    assert values["cluster_use"] == 2.0
    # Counts, not batch averages: a third, bigger batch weighs more.
    usage.update_state(np.full((4, 4, 4), 2, "int32"))
    probs = np.array([0.25, 0.25, 0.5])
    expected = np.exp(-(probs * np.log(probs)).sum())
    assert result(usage)["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_reset_state_and_empty_histogram():
    usage = CodebookUsage(num_embeddings=8)
    assert result(usage) == {"perplexity": 1.0, "cluster_use": 0.0}
    usage.update_state(np.arange(8, dtype="int32"))
    assert result(usage)["cluster_use"] == 8.0
    usage.reset_state()
    np.testing.assert_array_equal(ops.convert_to_numpy(usage.counts), np.zeros(8))
    assert result(usage) == {"perplexity": 1.0, "cluster_use": 0.0}


def test_accepts_int64_and_float_token_arrays():
    usage = CodebookUsage(num_embeddings=4)
    usage.update_state(np.array([0, 1, 2, 3], "int64"))
    usage.update_state(np.array([0.0, 1.0, 2.0, 3.0], "float32"))
    assert result(usage)["perplexity"] == pytest.approx(4.0, rel=1e-6)


def test_config_round_trip():
    usage = CodebookUsage(num_embeddings=16, name="usage")
    revived = CodebookUsage.from_config(usage.get_config())
    assert revived.num_embeddings == 16
    assert revived.name == "usage"
    revived_via_keras = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(usage)
    )
    assert isinstance(revived_via_keras, CodebookUsage)
    assert revived_via_keras.num_embeddings == 16


@pytest.mark.parametrize("value", [0, -3, 2.0])
def test_rejects_bad_num_embeddings(value):
    with pytest.raises(ValueError, match=f"num_embeddings={value}"):
        CodebookUsage(num_embeddings=value)
