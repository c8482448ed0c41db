import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.schedules import CosineAnnealing
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
