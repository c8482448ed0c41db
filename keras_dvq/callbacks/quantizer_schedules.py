"""The Gumbel flavor's schedules: temperature annealing, the KL weight's ramp
and the decoder-only phase on argmax codes.
"""

import keras
from keras import ops

from keras_dvq.schedules import cosine_anneal
from keras_dvq.utils.training_state import sync_training_state
from keras_dvq.utils.validation import check_non_negative
from keras_dvq.utils.validation import check_non_negative_int
from keras_dvq.utils.validation import check_positive
from keras_dvq.utils.validation import check_positive_int


class _QuantizerSchedule(keras.callbacks.Callback):
    """Sets a scalar variable of the model's quantizer to `value_at(step)`
    before every training step, counting steps from the optimizer's
    iterations so that resumed runs continue the schedule."""

    variable_name = None

    def value_at(self, step):
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        quantizer = getattr(self.model, "quantizer", None)
        self._variable = getattr(quantizer, self.variable_name, None)
        if not hasattr(self._variable, "assign"):
            raise ValueError(
                f"{type(self).__name__} needs a model whose quantizer has a "
                f"`{self.variable_name}` variable (a GumbelQuantizer). Received: "
                f"quantizer of type {type(quantizer).__name__}"
            )
        self._step = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        self.value = self.value_at(self._step)
        sync_training_state(self.model)
        self._variable.assign(self.value)
        self._step += getattr(self.model, "steps_per_execution", 1) or 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.variable_name] = self.value


class _CosineSchedule(_QuantizerSchedule):
    """A quantizer variable on `cosine_anneal` from `start_value` to
    `end_value` over `num_steps`."""

    def __init__(self, start_value, end_value, num_steps):
        super().__init__()
        self.start_value = start_value
        self.end_value = end_value
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.value = start_value

    def value_at(self, step):
        return cosine_anneal(step, self.start_value, self.end_value, self.num_steps)


class TemperatureAnnealing(_CosineSchedule):
    """Anneals a `GumbelQuantizer`'s temperature on a cosine schedule.

    DALL-E (and the original repo): from 1 to 1/16 over the first 150,000
    updates; "a linear one typically led to divergence". The current value is
    written to the epoch logs as `temperature`.

    Args:
        start_value: float. Temperature at step 0. Defaults to `1.0`.
        end_value: float. Temperature from `num_steps` on. Defaults to `1/16`.
        num_steps: int. Length of the ramp. Defaults to `150000`.

    Example:

    ```python
    model = VQVAE.from_flavors(vq_flavor="gumbel")
    model.fit(x_train, callbacks=[TemperatureAnnealing(), KLWeightRamp()])
    ```
    """

    variable_name = "temperature"

    def __init__(self, start_value=1.0, end_value=1.0 / 16, num_steps=150_000):
        super().__init__(
            check_positive("start_value", start_value),
            check_positive("end_value", end_value),
            num_steps,
        )


class KLWeightRamp(_CosineSchedule):
    """Ramps a `GumbelQuantizer`'s KL weight up on a cosine schedule.

    The original repo: from 0 to 5e-4 over the first 5,000 updates (DALL-E
    ramps beta to 6.6 on a loss divided by 256*256*3). The current value is
    written to the epoch logs as `kl_weight`.

    Args:
        start_value: float. KL weight at step 0. Defaults to `0.0`.
        end_value: float. KL weight from `num_steps` on. Defaults to `5e-4`.
        num_steps: int. Length of the ramp. Defaults to `5000`.

    Example:

    ```python
    model.fit(x_train, callbacks=[KLWeightRamp(end_value=1e-3, num_steps=2000)])
    ```
    """

    variable_name = "kl_weight"

    def __init__(self, start_value=0.0, end_value=5e-4, num_steps=5000):
        super().__init__(
            check_non_negative("start_value", start_value),
            check_non_negative("end_value", end_value),
            num_steps,
        )


class ArgmaxCodesPhase(_QuantizerSchedule):
    """Trains only the decoder, on argmax codes, from `start_step` on.

    Sets a `GumbelQuantizer`'s `argmax_codes` variable to 1 from
    `start_step`: training then decodes the argmax codes that the tokenizer
    emits, and neither the encoder nor the codebook gets a gradient. Without
    such a phase the decoder only ever sees soft mixtures of codes and
    reconstructs the tokens about 2 dB worse (docs/gumbel_tuning.md). Pair it
    with a lower learning rate for the same steps (`FinalPhase`). The current
    value is written to the epoch logs as `argmax_codes`.

    When the phase begins, the optimizer's momentum (its variables named
    `*_momentum`, as Keras' Adam, AdamW, SGD and Lion name them) is zeroed:
    otherwise it keeps moving the encoder for some 20 steps without a
    gradient, and the tokens with it (docs/gumbel_tuning.md).

    Args:
        start_step: int. First optimizer step of the phase.

    Example:

    ```python
    # 1,500 steps, the last 300 on argmax codes at learning rate 3e-4.
    schedule = FinalPhase(CosineAnnealing(3e-3), start_step=1200, value=3e-4)
    model.compile(optimizer=keras.optimizers.AdamW(schedule))
    model.fit(x_train, epochs=10, steps_per_epoch=150,
              callbacks=[ArgmaxCodesPhase(start_step=1200)])
    ```
    """

    variable_name = "argmax_codes"

    def __init__(self, start_step):
        super().__init__()
        self.start_step = check_non_negative_int("start_step", start_step)
        self.value = 0.0

    def value_at(self, step):
        return 1.0 if step >= self.start_step else 0.0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # A run resumed inside the phase has already reset its momentum.
        self._in_phase = float(ops.convert_to_numpy(self._variable)) == 1.0

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)  # synced the JAX state
        if self.value == 1.0 and not self._in_phase:
            for variable in self.model.optimizer.variables:
                if variable.name.endswith("_momentum"):
                    variable.assign(ops.zeros(variable.shape, variable.dtype))
        self._in_phase = self.value == 1.0
