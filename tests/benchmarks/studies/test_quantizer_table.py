"""benchmarks.studies.quantizer_table on a run directory written here."""

import json

import pytest

from benchmarks.studies import quantizer_table

pytestmark = pytest.mark.backend_independent


def write_run(root, name, psnr_values, ms_per_step):
    run = root / name
    run.mkdir()
    lines = ["epoch,val_psnr"] + [f"{i},{v}" for i, v in enumerate(psnr_values)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    log = "".join(f"150/150 - 9s - {ms}ms/step - loss: 0.1\n" for ms in ms_per_step)
    (root / f"{name}.log").write_text(log)
    return run


def test_one_row_per_model_with_last_epochs_and_throughput(tmp_path, capsys):
    run = write_run(tmp_path, "fsq", [20.0, 24.5, 23.0, 25.25], [900, 100, 64, 200])
    row = {
        "model": str(run / "model.keras"),
        "psnr": 25.123,
        "ssim": 0.81234,
        "codes_used": 240,
        "vocabulary_size": 256,
        "codes_used_per_stage": [240, 250],
        "bits_per_token": 7.456,
        "bits_per_image": 477.2,
    }
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"models": [row]}))
    assert quantizer_table.main([str(evaluation)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == quantizer_table.HEADER.splitlines()
    # The first epoch's 900 ms (compilation) is left out: median 100 ms.
    assert lines[2] == (
        "| fsq | 25.12 | 0.8123 | 240 / 256 (per stage: 240, 250) | 7.46 | 477 "
        "| 23.00-25.25 | 1280 |"
    )
