"""benchmarks.studies.folder_memory at tiny sizes."""

import re

import numpy as np
import pytest
from PIL import Image

from benchmarks.studies import folder_memory

pytestmark = pytest.mark.backend_independent


def test_write_makes_distinct_jpegs_larger_than_256_px(tmp_path):
    folder = tmp_path / "jpegs"
    assert folder_memory.main(["write", str(folder), "--count", "6"]) == 0
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(6)]
    images = [Image.open(f) for f in files]
    assert all(image.format == "JPEG" for image in images)
    assert all(288 <= min(image.size) <= 400 for image in images)
    pixels = [np.asarray(image.resize((32, 32))) for image in images]
    assert len({p.tobytes() for p in pixels}) == 6


def test_write_refuses_an_existing_directory(tmp_path, capsys):
    assert folder_memory.main(["write", str(tmp_path)]) == 2
    assert "exists; give a new directory" in capsys.readouterr().err


@pytest.mark.slow
def test_measure_prints_peak_memory_and_the_first_step(tmp_path, capsys):
    folder = tmp_path / "jpegs"
    folder_memory.main(["write", str(folder), "--count", "12"])
    argv = ["measure", str(folder), "--image_size", "32", "--steps", "1"]
    assert folder_memory.main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(
        r"12 files at 32 px: peak RSS ([\d,]+) MB, first step after ([\d.]+) s, "
        r"load .+",
        line,
    )
    assert match, line
    assert float(match.group(2)) > 0
