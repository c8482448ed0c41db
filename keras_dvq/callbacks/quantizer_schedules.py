"""The Gumbel flavor's schedules: temperature annealing, the KL weight's ramp
and the decoder-only phase on argmax codes.

The temperature and the KL weight are computed inside the compiled training
step, by the quantizer, from its own count of training steps
(`GumbelQuantizer.temperature_schedule`, `kl_weight_schedule`): the callbacks
here only hand it the schedules when `fit` begins and do nothing per batch.
"""

import keras
from keras import ops

from keras_dvq.schedules import CosineAnnealing
from keras_dvq.utils.training_state import optimizer_step
from keras_dvq.utils.training_state import sync_training_state
from keras_dvq.utils.validation import check_non_negative
from keras_dvq.utils.validation import check_non_negative_int
from keras_dvq.utils.validation import check_positive
from keras_dvq.utils.validation import check_positive_int


def _quantizer_variable(callback, name):
    """The model's quantizer and its variable `name`; `ValueError` where the
    quantizer has none (it is not a `GumbelQuantizer`)."""
    quantizer = getattr(callback.model, "quantizer", None)
    variable = getattr(quantizer, name, None)
    if not hasattr(variable, "assign"):
        raise ValueError(
            f"{type(callback).__name__} needs a model whose quantizer has a "
            f"`{name}` variable (a GumbelQuantizer). Received: "
            f"quantizer of type {type(quantizer).__name__}"
        )
    return quantizer, variable


def _same_schedule(a, b):
    if a is b:
        return True
    if type(a) is not type(b) or not hasattr(a, "get_config"):
        return False
    return a.get_config() == b.get_config()


class _CosineSchedule(keras.callbacks.Callback):
    """Hands the quantizer `cosine_anneal` from `start_value` to `end_value`
    over `num_steps` as its `<variable_name>_schedule` when training
    begins, and sets the quantizer's step count to the optimizer's, so that
    a resumed run (or a tuner's trial that sets the optimizer's iterations)
    continues the schedule. No per-batch work: the compiled step evaluates
    the schedule."""

    variable_name = None

    def __init__(self, start_value, end_value, num_steps):
        super().__init__()
        self.start_value = start_value
        self.end_value = end_value
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.value = start_value

    @property
    def schedule(self):
        """The `CosineAnnealing` that the quantizer evaluates."""
        return CosineAnnealing(self.start_value, self.end_value, self.num_steps)

    def on_train_begin(self, logs=None):
        quantizer, _ = _quantizer_variable(self, self.variable_name)
        attribute = f"{self.variable_name}_schedule"
        schedule = self.schedule
        changed = not _same_schedule(getattr(quantizer, attribute), schedule)
        setattr(quantizer, attribute, schedule)
        step = optimizer_step(self.model)
        quantizer.iterations.assign(ops.cast(step, quantizer.iterations.dtype))
        if changed:
            # A step traced in an earlier `fit` holds the old schedule.
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        # The value the epoch's last step used (the state is synced here).
        _, variable = _quantizer_variable(self, self.variable_name)
        self.value = float(ops.convert_to_numpy(variable))
        if logs is not None:
            logs[self.variable_name] = self.value


class TemperatureAnnealing(_CosineSchedule):
    """Anneals a `GumbelQuantizer`'s temperature on a cosine schedule.

    DALL-E (and the original repo): from 1 to 1/16 over the first 150,000
    updates; "a linear one typically led to divergence". When `fit` begins,
    the callback sets the quantizer's `temperature_schedule` to
    `CosineAnnealing(start_value, end_value, num_steps)` and its step count
    to the optimizer's `iterations`; the compiled training step then
    computes the temperature itself (no per-batch work on the host). The
    value at the end of each epoch is written to the epoch logs as
    `temperature`. Passing the schedule to the quantizer directly does the
    same, except for aligning the step count.

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
    ramps beta to 6.6 on a loss divided by 256*256*3). Like
    `TemperatureAnnealing`, it sets the quantizer's `kl_weight_schedule` when
    `fit` begins and the compiled step computes the weight. The value at the
    end of each epoch is written to the epoch logs as `kl_weight`.

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


class ArgmaxCodesPhase(keras.callbacks.Callback):
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
    gradient, and the tokens with it (docs/gumbel_tuning.md). That is work
    on the optimizer's state, which the forward pass cannot reach on JAX, so
    the phase stays a callback; it touches the model only when the phase
    begins or ends (counting steps from the optimizer's `iterations` at the
    start of `fit`), not every batch.

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

    def __init__(self, start_step):
        super().__init__()
        self.start_step = check_non_negative_int("start_step", start_step)
        self.value = 0.0

    def value_at(self, step):
        return 1.0 if step >= self.start_step else 0.0

    def on_train_begin(self, logs=None):
        _, self._variable = _quantizer_variable(self, "argmax_codes")
        self._step = optimizer_step(self.model)
        self._steps_per_batch = getattr(self.model, "steps_per_execution", 1) or 1
        # A run resumed inside the phase has already reset its momentum.
        self.value = float(ops.convert_to_numpy(self._variable))

    def on_train_batch_begin(self, batch, logs=None):
        # Not `self.model` here: on JAX, reading it syncs the training state.
        value = self.value_at(self._step)
        self._step += self._steps_per_batch
        if value == self.value:
            return
        sync_training_state(self.model)
        self._variable.assign(value)
        if value == 1.0:
            for variable in self.model.optimizer.variables:
                if variable.name.endswith("_momentum"):
                    variable.assign(ops.zeros(variable.shape, variable.dtype))
        self.value = value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["argmax_codes"] = self.value
