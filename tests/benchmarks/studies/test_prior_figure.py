"""benchmarks.studies.prior_figure with the tiny saved VQ-VAE."""

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from benchmarks.studies import prior_figure

pytestmark = pytest.mark.backend_independent

SAVED = Path(__file__).parents[2] / "fixtures" / "saved"


def test_writes_three_labelled_rows_of_eight_patches(tmp_path):
    samples = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), np.uint8)
    np.save(tmp_path / "samples.npy", samples)
    out = tmp_path / "figure" / "prior.png"
    argv = [str(SAVED / "vqvae.keras"), str(tmp_path), "2", str(out)]
    assert prior_figure.main(argv) == 0
    picture = matplotlib.image.imread(out)
    # Eight 32x32 patches enlarged 4 times side by side, three rows high.
    assert picture.shape[1] > 8 * 32 * 4 and picture.shape[0] > 3 * 32 * 4


def test_an_unknown_class_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prior_figure.main(["m.keras", str(tmp_path), "99", "out.png"])
    assert exit_info.value.code == 2
    assert "class_id: invalid choice: 99" in capsys.readouterr().err
