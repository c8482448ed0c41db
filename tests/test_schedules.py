import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.schedules import CosineAnnealing
from keras_dvq.schedules import FinalPhase
from keras_dvq.schedules import cosine_anneal


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1.0),
        # Half way, the warped fraction is 1 - cos(pi / 4).
        (75_000, 1.0 + (1 - math.cos(math.pi / 4)) * (1 / 16 - 1.0)),
        (150_000, 1 / 16),
        (400_000, 1 / 16),  # constant after the ramp
        (-5, 1.0),
    ],
)
def test_cosine_anneal_temperature_schedule(step, expected):
    assert cosine_anneal(step, 1.0, 1 / 16, 150_000) == pytest.approx(expected)


def test_cosine_anneal_moves_slowly_first():
    values = [cosine_anneal(s, 0.0, 5e-4, 5000) for s in (0, 1250, 2500, 3750, 5000)]
    increments = np.diff(values)
    assert np.all(increments > 0)
    assert np.all(np.diff(increments) > 0)  # accelerating: a quarter cosine
    assert values[-1] == pytest.approx(5e-4)


def test_tensor_and_python_steps_agree():
    steps = np.array([0, 10, 2500, 4999, 5000, 9000])
    tensor_values = ops.convert_to_numpy(
        cosine_anneal(ops.array(steps), 0.0, 5e-4, 5000)
    )
    python_values = [cosine_anneal(int(s), 0.0, 5e-4, 5000) for s in steps]
    # float32 1 - cos(x) cancels near x = 0: absolute error ~ 5e-4 * 1e-7.
    np.testing.assert_allclose(tensor_values, python_values, rtol=1e-5, atol=1e-10)


def test_learning_rate_schedule_values_and_config():
    schedule = CosineAnnealing(start_value=3e-4, end_value=1.25e-6, num_steps=1000)
    assert float(schedule(0)) == pytest.approx(3e-4)
    assert float(schedule(1000)) == pytest.approx(1.25e-6)
    assert float(schedule(ops.array(500))) == pytest.approx(
        cosine_anneal(500, 3e-4, 1.25e-6, 1000), rel=1e-5
    )
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert revived.get_config() == schedule.get_config()


def test_final_phase_switches_the_learning_rate_at_its_step():
    before = CosineAnnealing(start_value=3e-3, end_value=1e-5, num_steps=100)
    schedule = FinalPhase(before, start_step=60, value=3e-4)
    for step in (0, 30, 59):
        assert float(schedule(ops.array(step))) == pytest.approx(
            cosine_anneal(step, 3e-3, 1e-5, 100), rel=1e-5
        )
    for step in (60, 61, 500):
        assert float(schedule(ops.array(step))) == pytest.approx(3e-4)
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert isinstance(revived.schedule, CosineAnnealing)
    assert revived.schedule.get_config() == before.get_config()
    assert float(revived(ops.array(59))) == pytest.approx(float(schedule(59)))
    assert float(revived(ops.array(60))) == pytest.approx(3e-4)
    constant = FinalPhase(1e-3, start_step=2, value=1e-4)
    assert [float(constant(ops.array(s))) for s in (1, 2)] == pytest.approx(
        [1e-3, 1e-4]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_step": -1}, "`start_step` must be an integer >= 0.*start_step=-1"),
        ({"start_step": 1.5}, "start_step=1.5"),
        ({"value": 0.0}, "`value` must be a positive number.*value=0.0"),
        ({"schedule": "fast"}, "`schedule` must be a positive number.*'fast'"),
    ],
)
def test_final_phase_rejects_bad_arguments(kwargs, message):
    arguments = {"schedule": CosineAnnealing(), "start_step": 10, "value": 1e-4}
    with pytest.raises(ValueError, match=message):
        FinalPhase(**{**arguments, **kwargs})
