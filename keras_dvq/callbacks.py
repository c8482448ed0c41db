"""Training callbacks: k-means codebook init and the Gumbel schedules."""

import math

import keras
import numpy as np
from keras import ops

from keras_dvq.layers.quantizer import not_initializable_message
from keras_dvq.schedules import cosine_anneal
from keras_dvq.validation import check_non_negative
from keras_dvq.validation import check_non_negative_int
from keras_dvq.validation import check_positive
from keras_dvq.validation import check_positive_int


class KMeansInit(keras.callbacks.Callback):
    """Sets a quantizer's codebook to k-means centroids of the data.

    Before the first training step, encodes a random sample of `data`,
    collects `num_samples` projected encoder outputs `z_e` and runs k-means
    (k-means++ seeding, Lloyd iterations) with one cluster per code. Without
    such a data-driven start, the original repo's VQ-VAE collapses to a few
    codes. The codebook is assigned once, outside the replicas' step, so every
    replica of a distribution strategy gets the same centroids. A model that
    has already taken optimizer steps (resumed or fine-tuned) is left alone.

    Args:
        data: images (array) or a `tf.data.Dataset` of images, `(images,
            labels)` pairs or dicts with an `"image"` key.
        num_samples: int. Number of encoder output vectors to cluster.
            Defaults to `20000`, as the original repo.
        num_iterations: int. Maximum Lloyd iterations. Defaults to `20`.
        batch_size: int. Batch size of the encoding pass. Defaults to `256`.
        seed: int or `None`. Seed of the sampling and the k-means++ draws.
        verbose: 0 (silent), 1 (progress bars of the encoding pass and of
            k-means) or 2 (a line at the end of each). Defaults to `0`.

    Example:

    ```python
    model.fit(x_train, epochs=1, callbacks=[KMeansInit(x_train)])
    ```
    """

    # Vectors are drawn from this many times more images than strictly
    # needed, so that neighbouring (correlated) positions do not dominate.
    IMAGE_OVERSAMPLING = 4

    def __init__(
        self,
        data,
        num_samples=20000,
        num_iterations=20,
        batch_size=256,
        seed=None,
        verbose=0,
    ):
        super().__init__()
        self.data = data
        self.verbose = verbose
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.num_iterations = check_positive_int("num_iterations", num_iterations)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = seed
        self.samples = None  # the clustered encoder outputs, for inspection
        self.centroids = None

    def on_train_begin(self, logs=None):
        quantizer = self.model.quantizer
        if not getattr(quantizer, "initializable_codes", False):
            raise ValueError(not_initializable_message(quantizer))
        if self.model.optimizer is not None and self.model.optimizer.iterations > 0:
            return
        rng = np.random.default_rng(self.seed)
        images = _sample_images(self.data, self._images_needed(), rng)
        if not self.model.built:
            self.model.build((None,) + images.shape[1:])
        latents = self.model.project(
            images, batch_size=self.batch_size, verbose=self.verbose
        )
        # Too few latents for the codes: `initialize_codes` says so.
        latents = latents.reshape(-1, latents.shape[-1])
        rows = rng.choice(len(latents), min(self.num_samples, len(latents)), False)
        self.samples = latents[rows]
        self.centroids = quantizer.initialize_codes(
            self.samples,
            num_iterations=self.num_iterations,
            seed=self.seed,
            verbose=self.verbose,
        )

    def _images_needed(self):
        stride = self.model.stride or 1
        # A 32x32 image at stride 4 gives 64 vectors; smaller strides give more.
        positions = max((32 // stride) ** 2, 1)
        return math.ceil(self.IMAGE_OVERSAMPLING * self.num_samples / positions)


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


def sync_training_state(model):
    """Makes the model's variables current before a callback assigns one.

    The JAX trainer carries the training state outside the Keras variables
    during `fit`; syncing writes it back and makes the next step read the
    variables again, so the assignment is not lost. Other backends train on
    the variables themselves.
    """
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _sample_images(data, count, rng):
    """Up to `count` images of `data` as a NumPy array (random for arrays,
    the first ones of a dataset, which `fit` would shuffle anyway)."""
    if hasattr(data, "as_numpy_iterator"):
        batches, total = [], 0
        for element in data.as_numpy_iterator():
            images = _images_of(element)
            if images.ndim == 3:  # an unbatched dataset
                images = images[None]
            batches.append(images)
            total += len(images)
            if total >= count:
                break
        if not batches:
            raise ValueError("Argument `data` of KMeansInit is an empty dataset.")
        return np.concatenate(batches)[:count]
    images = _images_of(data)
    if len(images) == 0:
        raise ValueError("Argument `data` of KMeansInit holds no images.")
    if len(images) > count:
        images = images[np.sort(rng.choice(len(images), count, replace=False))]
    return np.asarray(images)


def _images_of(element):
    if isinstance(element, dict):
        return np.asarray(element["image"])
    if isinstance(element, (tuple, list)):
        return np.asarray(element[0])
    return np.asarray(element)
