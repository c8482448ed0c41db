import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.ops.code_statistics import code_counts
from keras_dvq.ops.code_statistics import sums_by_code


def test_code_counts_equal_bincount_with_repeats_and_unused_codes():
    tokens = np.array([[3, 3, 0], [7, 3, 0]], "int32")
    counts = ops.convert_to_numpy(code_counts(tokens, 9))
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts, np.bincount(tokens.ravel(), minlength=9))


def test_sums_by_code_group_rows_by_token():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 6)).astype("float32")
    tokens = rng.integers(0, 16, size=500).astype("int32")
    tokens[tokens == 5] = 4  # code 5 unused: zero count and sum
    counts, sums = (ops.convert_to_numpy(x) for x in sums_by_code(vectors, tokens, 16))
    assert counts.shape == (16,) and sums.shape == (16, 6)
    np.testing.assert_array_equal(counts, np.bincount(tokens, minlength=16))
    expected = np.stack([vectors[tokens == code].sum(axis=0) for code in range(16)])
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-5)
    assert counts[5] == 0 and not sums[5].any()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch profiler")
def test_no_host_reads_on_torch():
    import torch

    tokens = torch.randint(0, 512, (1024,), dtype=torch.int32)
    vectors = torch.randn(1024, 8)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as profile:
        code_counts(tokens, 512)
        sums_by_code(vectors, tokens, 512)
    reads = [e for e in profile.key_averages() if e.key == "aten::_local_scalar_dense"]
    assert not reads
