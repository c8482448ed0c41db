import numpy as np
import pytest
from PIL import Image

from keras_dvq.evaluation import plots

# Drawing is NumPy and matplotlib whatever the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_save_picture_writes_the_rendered_pixels(tmp_path):
    figure = plots.comparison_figure(
        np.zeros((4, 8, 8, 3)), np.ones((4, 8, 8, 3)), per_row=4, title="a title"
    )
    picture = plots.figure_to_array(figure)
    width, height = figure.get_size_inches() * plots.DPI
    assert picture.shape == (round(height), round(width), 3)
    assert picture.dtype == np.uint8
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 2  # not blank
    path = tmp_path / "new" / "picture.png"
    plots.save_picture(picture, path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), picture)
    assert sorted(p.name for p in path.parent.iterdir()) == ["picture.png"]


def test_saved_figure_and_saved_picture_agree(tmp_path):
    figure = plots.codebook_usage_figure(np.arange(16), tokens_per_image=4)
    plots.save_figure(figure, tmp_path / "figure.png")
    plots.save_picture(plots.figure_to_array(figure), tmp_path / "picture.png")
    with (
        Image.open(tmp_path / "figure.png") as saved,
        Image.open(tmp_path / "picture.png") as rendered,
    ):
        np.testing.assert_array_equal(
            np.asarray(saved.convert("RGB")), np.asarray(rendered.convert("RGB"))
        )


def test_prior_curves_are_in_bits_with_both_baselines():
    history = {"loss": [2.0, 1.5, 1.0], "val_loss": [2.1, 1.7, 1.4]}
    baselines = {"unigram_cross_entropy": 3.5, "log2_vocabulary": 4.0}
    figure = plots.prior_curves_figure(history, baselines, "validation")
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    np.testing.assert_allclose(
        lines["train"].get_ydata(), np.array(history["loss"]) / np.log(2)
    )
    np.testing.assert_allclose(
        lines["validation"].get_ydata(), np.array(history["val_loss"]) / np.log(2)
    )
    assert lines["unigram (validation)"].get_ydata()[0] == 3.5
    assert lines["log2 K"].get_ydata()[0] == 4.0
    assert figure.axes[0].get_ylabel() == "bits per token"


def test_training_curves_add_the_discriminator_panels_for_adversarial_runs():
    plain = [
        {"epoch": str(e), "recon_loss": "0.5", "val_recon_loss": "0.6", "psnr": "20"}
        for e in range(3)
    ]
    assert len(plots.training_curves_figure(plain, 10).axes) == 4
    adversarial = [
        {**row, "disc_loss": "1.0", "adv_loss": "0.1", "adv_weight": "0.1"}
        | {"logits_real": "0.3", "logits_fake": "-0.2"}
        for row in plain
    ]
    axes = plots.training_curves_figure(adversarial, 10).axes
    assert len(axes) == 6
    logits = next(a for a in axes if a.get_title() == "discriminator's mean logits")
    assert [line.get_label() for line in logits.lines] == ["logits_real", "logits_fake"]
    np.testing.assert_array_equal(logits.lines[1].get_ydata(), [-0.2] * 3)
    np.testing.assert_array_equal(logits.lines[0].get_xdata(), [10, 20, 30])
