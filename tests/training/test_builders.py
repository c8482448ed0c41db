import pytest

from keras_dvq.callbacks.quantizer_schedules import ArgmaxCodesPhase
from keras_dvq.callbacks.quantizer_schedules import KLWeightRamp
from keras_dvq.callbacks.quantizer_schedules import TemperatureAnnealing
from keras_dvq.schedules import CosineAnnealing
from keras_dvq.schedules import FinalPhase
from keras_dvq.training.builders import GUMBEL_DEFAULTS
from keras_dvq.training.builders import gumbel_callbacks
from keras_dvq.training.builders import gumbel_quantizer_kwargs
from keras_dvq.training.builders import gumbel_schedules
from keras_dvq.training.builders import learning_rate_schedule
from keras_dvq.training.builders import run_length


@pytest.mark.parametrize(
    "batches_per_pass, max_steps, expected",
    [(163, 1500, (10, 150)), (163, 400, (3, 134)), (5, 6, (2, 3)), (163, 1, (1, 1))],
)
def test_run_length_takes_epochs_of_at_most_one_pass(
    batches_per_pass, max_steps, expected
):
    epochs, steps_per_epoch = run_length(batches_per_pass, max_steps)
    assert (epochs, steps_per_epoch) == expected
    assert steps_per_epoch <= batches_per_pass
    assert max_steps <= epochs * steps_per_epoch < max_steps + epochs


def test_gumbel_schedule_lengths_are_fractions_of_the_run():
    hparams = {**GUMBEL_DEFAULTS, "temperature_anneal_fraction": 0.5}
    hparams.update(kl_ramp_fraction=1e-6, temperature_start=2.0, kl_weight=1e-3)
    temperature, kl_ramp, _ = gumbel_callbacks(hparams, total_steps=1000)
    assert isinstance(temperature, TemperatureAnnealing)
    assert isinstance(kl_ramp, KLWeightRamp)
    assert (temperature.start_value, temperature.num_steps) == (2.0, 500)
    assert temperature.end_value == GUMBEL_DEFAULTS["temperature_end"]
    assert (kl_ramp.start_value, kl_ramp.end_value) == (0.0, 1e-3)
    assert kl_ramp.num_steps == 1  # never shorter than one step
    # Fresh callbacks on every call: they carry per-run state.
    assert gumbel_callbacks(hparams, 1000)[0] is not temperature


def test_quantizer_kwargs_with_the_run_length_carry_the_callbacks_schedules():
    hparams = {**GUMBEL_DEFAULTS, "temperature_anneal_fraction": 0.5}
    temperature, kl_ramp, _ = gumbel_callbacks(hparams, total_steps=1000)
    schedules = gumbel_schedules(hparams, total_steps=1000)
    for schedule, callback in (
        (schedules["temperature_schedule"], temperature),
        (schedules["kl_weight_schedule"], kl_ramp),
    ):
        assert isinstance(schedule, CosineAnnealing)
        assert schedule.get_config() == callback.schedule.get_config()
    assert schedules["temperature_schedule"].get_config() == {
        "start_value": GUMBEL_DEFAULTS["temperature_start"],
        "end_value": GUMBEL_DEFAULTS["temperature_end"],
        "num_steps": 500,
    }
    kwargs = gumbel_quantizer_kwargs(hparams, total_steps=1000)
    assert kwargs["kl_weight_schedule"].get_config() == kl_ramp.schedule.get_config()
    assert "temperature_schedule" not in gumbel_quantizer_kwargs(hparams)


def test_original_schedules_at_the_default_run_length():
    temperature, kl_ramp = gumbel_callbacks(
        {**GUMBEL_DEFAULTS, "temperature_anneal_fraction": 100.0,
         "kl_ramp_fraction": 5000 / 1500, "decoder_fraction": 0.0},
        total_steps=1500,
    )  # fmt: skip
    assert (temperature.num_steps, kl_ramp.num_steps) == (150_000, 5000)
    kwargs = gumbel_quantizer_kwargs({**GUMBEL_DEFAULTS, "straight_through": True})
    assert kwargs["straight_through"] is True
    assert kwargs["temperature"] == GUMBEL_DEFAULTS["temperature_start"]


def test_the_decoder_phase_is_the_last_fraction_of_the_run():
    hparams = {**GUMBEL_DEFAULTS, "learning_rate": 3e-3}
    hparams.update(decoder_fraction=0.1, decoder_learning_rate=2e-4)
    *_, phase = gumbel_callbacks(hparams, total_steps=1500)
    assert isinstance(phase, ArgmaxCodesPhase)
    assert phase.start_step == 1350
    schedule = learning_rate_schedule(hparams, total_steps=1500)
    assert isinstance(schedule, FinalPhase)
    assert schedule.start_step == 1350
    assert float(schedule(1349)) == pytest.approx(float(schedule.schedule(1349)))
    assert float(schedule(1349)) == pytest.approx(3e-3, rel=1e-3)
    assert float(schedule(1350)) == pytest.approx(2e-4)
    # No phase: the plain cosine decay and no phase callback.
    for fraction in (0.0, 1e-4):  # 1e-4 of 1,500 steps rounds to none
        hparams["decoder_fraction"] = fraction
        assert len(gumbel_callbacks(hparams, total_steps=1500)) == 2
        assert type(learning_rate_schedule(hparams, 1500)) is CosineAnnealing
    # Other flavors' recipes hold the learning rate only.
    plain = learning_rate_schedule({"learning_rate": 3e-4}, total_steps=1500)
    assert (type(plain), plain.start_value) == (CosineAnnealing, 3e-4)


def test_run_decay_ends_the_learning_rate_at_the_last_step():
    hparams = {"learning_rate": 3e-4}
    original = learning_rate_schedule(hparams, total_steps=1500)
    run = learning_rate_schedule(hparams, total_steps=1500, decay="run")
    assert (original.num_steps, run.num_steps) == (1_200_000, 1500)
    # The original decay barely moves in a short run; the run's reaches its
    # end value at the last step, through the same curve.
    assert float(original(1500)) == pytest.approx(3e-4, rel=1e-5)
    assert float(run(0)) == pytest.approx(3e-4)
    assert float(run(750)) == pytest.approx(1.25e-6 + (3e-4 - 1.25e-6) * 2**-0.5)
    assert float(run(1500)) == pytest.approx(1.25e-6)
    # With a decoder phase, the decay still spans the whole run.
    gumbel = {**GUMBEL_DEFAULTS, "decoder_fraction": 0.2}
    phased = learning_rate_schedule(gumbel, total_steps=1000, decay="run")
    assert (phased.start_step, phased.schedule.num_steps) == (800, 1000)


def test_unknown_decay_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"`decay` must be one of.*'linear'"):
        learning_rate_schedule({"learning_rate": 3e-4}, 1500, decay="linear")
