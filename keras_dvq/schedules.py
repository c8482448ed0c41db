"""Learning-rate schedules, and the original repo's cosine anneal that the
Gumbel callbacks share."""

import math

import keras
from keras import ops

from keras_dvq.utils.validation import check_non_negative_int
from keras_dvq.utils.validation import check_positive


def cosine_anneal(step, start_value, end_value, num_steps):
    """Value at `step` of a cosine ramp from `start_value` to `end_value`.

    The ramp covers steps `[0, num_steps]` and stays at `end_value` after.
    As in the original repo (and the DALL-E paper's "cosine" schedules), the
    fraction `a = clip(step / num_steps, 0, 1)` is warped to
    `1 - cos(a * pi / 2)`, so the value moves slowly at first. Works on Python
    numbers and on tensors.
    """
    if isinstance(step, (int, float)):
        fraction = min(max(step / num_steps, 0.0), 1.0)
        warped = 1.0 - math.cos(fraction * math.pi / 2.0)
    else:
        fraction = ops.clip(ops.cast(step, "float32") / num_steps, 0.0, 1.0)
        warped = 1.0 - ops.cos(fraction * (math.pi / 2.0))
    return warped * end_value + (1.0 - warped) * start_value


@keras.saving.register_keras_serializable(package="keras_dvq")
class CosineAnnealing(keras.optimizers.schedules.LearningRateSchedule):
    """Learning-rate schedule: `cosine_anneal` over optimizer steps.

    Defaults to the original repo: 3e-4 down to 1.25e-6 over 1,200,000 steps
    (the DALL-E paper anneals from 1e-4 over the same span). It schedules
    other values of the step too: a `GumbelQuantizer` evaluates one as its
    `temperature_schedule` or `kl_weight_schedule` inside the training step.

    Args:
        start_value: float. Learning rate at step 0.
        end_value: float. Learning rate from `num_steps` on.
        num_steps: int. Length of the ramp.

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.AdamW(CosineAnnealing()))
    ```
    """

    def __init__(self, start_value=3e-4, end_value=1.25e-6, num_steps=1_200_000):
        self.start_value = float(start_value)
        self.end_value = float(end_value)
        self.num_steps = int(num_steps)

    def __call__(self, step):
        return cosine_anneal(step, self.start_value, self.end_value, self.num_steps)

    def get_config(self):
        return {
            "start_value": self.start_value,
            "end_value": self.end_value,
            "num_steps": self.num_steps,
        }


@keras.saving.register_keras_serializable(package="keras_dvq")
class FinalPhase(keras.optimizers.schedules.LearningRateSchedule):
    """Learning-rate schedule: `schedule` until `start_step`, then `value`.

    The learning rate of a last phase of training that fine-tunes part of
    the model, such as the decoder-only phase of the Gumbel recipe
    (`ArgmaxCodesPhase`).

    Args:
        schedule: a `LearningRateSchedule` (or a float) for the steps before
            `start_step`.
        start_step: int. First optimizer step of the final phase.
        value: float. Learning rate from `start_step` on.

    Example:

    ```python
    schedule = FinalPhase(CosineAnnealing(3e-3), start_step=1200, value=3e-4)
    model.compile(optimizer=keras.optimizers.AdamW(schedule))
    ```
    """

    def __init__(self, schedule, start_step, value):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        if not callable(schedule):
            schedule = check_positive("schedule", schedule)
        self.schedule = schedule
        self.start_step = check_non_negative_int("start_step", start_step)
        self.value = check_positive("value", value)

    def __call__(self, step):
        before = self.schedule(step) if callable(self.schedule) else self.schedule
        in_phase = ops.cast(step, "float32") >= self.start_step
        return ops.where(in_phase, self.value, before)

    def get_config(self):
        schedule = self.schedule
        if callable(schedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "start_step": self.start_step,
            "value": self.value,
        }
