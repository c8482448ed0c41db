"""benchmarks.report: the ratios of each row and the table."""

import pytest

from benchmarks.report import failures
from benchmarks.report import fit_ratios
from benchmarks.report import format_table
from benchmarks.report import window_ratios

# Arithmetic and formatting: nothing backend-specific.
pytestmark = pytest.mark.backend_independent

WINDOWS = {
    "train": [90.0, 100.0, 300.0],
    "identity": [125.0, 120.0, 110.0],
    "encode": [400.0, 1000.0, 500.0],
    "reference": [50.0, 40.0, 60.0],
}


def test_window_ratios_divide_medians_not_means():
    ratios = window_ratios(WINDOWS)
    assert ratios["train_images_per_s"] == 100.0
    assert ratios["identity_images_per_s"] == 120.0
    # The quantizer costs the extra time per image over the identity twin.
    assert ratios["quantizer_overhead"] == pytest.approx(0.2)
    assert ratios["encode_over_train"] == pytest.approx(5.0)
    assert ratios["reference_images_per_s"] == 50.0
    assert ratios["train_over_reference"] == pytest.approx(2.0)
    assert ratios["identity_over_reference"] == pytest.approx(2.4)


def test_fit_ratios_use_the_reference_windows_around_the_fit():
    timeline = {"images_per_s": 30.0, "step_images_per_s": 45.0}
    ratios = fit_ratios(timeline, [40.0, 20.0])
    assert ratios["reference_images_per_s"] == 30.0
    assert ratios["fit_over_reference"] == pytest.approx(1.0)
    assert ratios["step_over_reference"] == pytest.approx(1.5)


def model_row(**extra):
    return {
        **window_ratios(WINDOWS),
        "batch_size": 32,
        "peak_memory_mb": 1234.0,
        "host_round_trips": {"per_step": 0},
        **extra,
    }


def report(backends, pipeline=None):
    return {
        "machine": {
            "processor": "cpu",
            "cpu_count": 2,
            "device": "cpu",
            "load_average_before": [1.0, 2.0, 3.0],
            "load_average_after": [0.5, 0.25, 0.125],
        },
        "pipeline": {"images_per_s": pipeline} if pipeline else {"error": "x"},
        "backends": backends,
    }


def test_table_rows_show_the_ratios_of_each_model():
    table = format_table(
        report(
            {
                "jax": {
                    "deepmind": model_row(),
                    "deepmind_k8192_64": model_row(image_size=64),
                    "vqgan": model_row(image_size=128, batch_size=8),
                    "dalle": {"error": "exit 1: boom"},
                }
            },
            pipeline=500.0,
        )
    )
    assert (
        "| jax | deepmind | 100 | 50 | 2.00x | 2.40x | +20.0% | 500 | 5.0x "
        "| 5.0x | 1,234 | 0 |"
    ) in table
    assert "| jax | deepmind_k8192_64 (64 px, batch 32) |" in table
    assert "| jax | vqgan (128 px, batch 8) |" in table
    slow = model_row(train_images_per_s=2.216, reference_images_per_s=0.3231)
    slow_table = format_table(report({"tf": {"vqgan": slow}}))
    slow_row = next(line for line in slow_table.splitlines() if "| tf |" in line)
    # Below 100 images/s, three significant digits instead of "2" and "0".
    assert slow_row.startswith("| tf | vqgan | 2.22 | 0.323 |"), slow_row
    assert "| jax | dalle | error: exit 1: boom |" in table
    assert "input pipeline (`sample` at 32 px, tf.data): 500 images/s" in table
    assert "load average before 1.00/2.00/3.00, after 0.50/0.25/0.12" in table


def test_fit_and_usage_rows_have_their_own_tables():
    fit = {
        "policy": "float32",
        "train_steps": 22,
        "images_per_s": 30.0,
        "step_images_per_s": 45.0,
        **fit_ratios({"images_per_s": 30.0, "step_images_per_s": 45.0}, [30.0]),
        "fit_over_steps": 0.25,
        "slowest_steps": [[3, 0.5], [7, 1.25]],
        "validation": {"psnr": 21.5, "cluster_use": 300.0},
    }
    usage = {"steps": 3, "recon_loss": 0.5, "perplexity": 12.0, "cluster_use": 9}
    table = format_table(
        report({"tensorflow": {"fit": fit, "usage_mixed_bfloat16": usage}})
    )
    assert (
        "| tensorflow | float32 | 22 | 30 | 45 | 30 | 1.00x | 1.50x | +25.0% "
        "| 1.25 | 21.50 | 300 |"
    ) in table
    assert "| tensorflow | mixed_bfloat16 | 3 | 0.5000 | 12.0 | 9 |" in table
    # Without a pipeline figure, no pipeline column ratio nor line.
    assert "input pipeline" not in table


def test_failures_gather_every_error_row():
    errors = failures(
        report({"tf": {"a": {"error": "one"}, "b": model_row()}, "jax": {}})
    )
    assert errors == ["x", "one"]
