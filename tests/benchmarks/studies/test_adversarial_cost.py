import pytest

from benchmarks.studies import adversarial_cost
from keras_dvq.models import VQVAE
from keras_dvq.models import AdversarialVQVAE


def test_the_models_are_the_plain_tokenizer_and_one_per_width():
    models = adversarial_cost.build_models((8, 4), disc_layers=1)
    assert list(models) == ["plain", "ndf 8", "ndf 4"]
    plain = models.pop("plain")
    assert type(plain) is VQVAE
    for ndf, model in zip((8, 4), models.values(), strict=True):
        assert isinstance(model, AdversarialVQVAE)
        assert (model.discriminator.ndf, model.discriminator.n_layers) == (ndf, 1)
        assert model.disc_start == 0  # both players step in every timed step


def test_a_short_study_prints_each_cost_against_the_plain_step(capsys):
    argv = ["--ndf", "4", "--disc_layers", "1", "--batch_size", "4"]
    argv += ["--image_size", "16", "--steps", "2", "--rounds", "1"]
    assert adversarial_cost.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("plain: ") and lines[0].endswith("x1.00")
    assert lines[1].startswith("ndf 4: ") and " ms per step, x" in lines[1]
    assert lines[2].startswith("load average: ")


@pytest.mark.parametrize(
    "argv", [["--ndf", "0"], ["--ndf", "a"], ["--steps", "1"], ["--rounds", "0"]]
)
def test_bad_flags_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        adversarial_cost.parse_args(argv)
    assert exit_info.value.code == 2
