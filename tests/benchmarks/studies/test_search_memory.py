"""benchmarks.studies.search_memory at tiny sizes."""

import re

import pytest

from benchmarks.studies import search_memory
from keras_dvq.layers import vector_quantizer

pytestmark = pytest.mark.backend_independent


def test_whole_search_lifts_the_block_limit_only_inside():
    limit = vector_quantizer.SEARCH_BLOCK_ELEMENTS
    with search_memory.search_mode("whole"):
        assert vector_quantizer.SEARCH_BLOCK_ELEMENTS == 2**40
    assert vector_quantizer.SEARCH_BLOCK_ELEMENTS == limit
    with search_memory.search_mode("blocks"):
        assert vector_quantizer.SEARCH_BLOCK_ELEMENTS == limit


def test_prints_peak_memory_and_three_step_times(capsys):
    sizes = ["--batch_size", "2", "--image_size", "16", "--num_embeddings", "16"]
    assert search_memory.main(["whole", *sizes, "--n_hid", "8"]) == 0
    line = capsys.readouterr().out.strip()
    match = re.fullmatch(
        r"whole: peak RSS ([\d,]+) MB, s/step (\S+), (\S+), (\S+), load .+", line
    )
    assert match, line
    assert all(float(value) > 0 for value in match.groups()[1:])


def test_an_unknown_mode_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        search_memory.main(["half"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'half'" in capsys.readouterr().err
