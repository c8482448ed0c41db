"""How `VQVAE.encode`, `decode`, `project` and `predict` run a graph method
of the model over arrays and datasets: through Keras' `predict`, batch by
batch for in-memory arrays, padded to whole batches for data parallelism."""

import keras
import numpy as np

from keras_dvq import distribution


class InferenceModel(keras.Model):
    """Runs one graph method of a VQVAE through Keras' own `predict`, which
    batches arrays and datasets and compiles the step on every backend."""

    def __init__(self, vqvae, method, **kwargs):
        super().__init__(**kwargs)
        self.vqvae = vqvae
        self.method = method

    def call(self, inputs):
        return getattr(self.vqvae, self.method)(inputs)


class InferenceModels:
    """Caches the `InferenceModel`s of a VQVAE.

    A plain object on purpose: Keras neither tracks nor saves what it holds,
    so the cached models never appear in the VQVAE's layers or `.keras` file.
    """

    def __init__(self, vqvae):
        self.vqvae = vqvae
        self.models = {}

    def run(self, name, data, batch_size, verbose, steps, callbacks=None):
        if name not in self.models:
            self.models[name] = InferenceModel(
                self.vqvae, f"_{name}_graph", name=f"{self.vqvae.name}_{name}"
            )
        if not self.vqvae.built:
            raise ValueError(
                f"`{name}` needs a built model: call `fit()`, `build()` or the "
                "model itself on a batch first, or load a saved model."
            )
        # Keras' JAX `predict` purges the model's variables while it runs and
        # loses them if the step raises (e.g. a dataset whose shapes are only
        # known in the trace): keep references (JAX arrays are immutable) to
        # put them back.
        variables = self.vqvae.variables
        on_jax = keras.backend.backend() == "jax"
        values = [variable.value for variable in variables] if on_jax else []
        model = self.models[name]
        data, count = pad_for_data_parallel(data, batch_size)
        try:
            if _batch_by_batch(model, data, verbose, steps, callbacks):
                outputs = _predict_in_batches(model, data, batch_size or 32)
            else:
                outputs = model.predict(
                    data,
                    batch_size=batch_size,
                    verbose=verbose,
                    steps=steps,
                    callbacks=callbacks,
                )
            return keras.tree.map_structure(lambda x: x[:count], outputs)
        except Exception:
            for variable, value in zip(variables, values, strict=False):
                variable.assign(value)
            raise


def _batch_by_batch(model, data, verbose, steps, callbacks):
    """Whether `_predict_in_batches` can stand in for `model.predict`: a
    non-empty array, no progress bar, steps or callbacks, one replica."""
    return (
        isinstance(data, np.ndarray)
        and len(data) > 0
        and not verbose
        and steps is None
        and not callbacks
        and not distribution.is_distributed(model)
    )


def _predict_in_batches(model, data, batch_size):
    """`model.predict(data, batch_size=batch_size)` for an in-memory array,
    one `predict_on_batch` call per batch.

    Keras' `predict` builds an input pipeline on every call (a tf.data one on
    TensorFlow, whose set-up and autotuning thread took 0.6-1 s a call on a
    2-core CPU): more than the compiled steps of a thousand 32x32 images.
    """
    batches = [
        model.predict_on_batch(data[start : start + batch_size])
        for start in range(0, len(data), batch_size)
    ]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


def pad_for_data_parallel(data, batch_size):
    """Pads arrays so that every batch splits evenly over the devices of a
    `keras.distribution` (JAX), which cannot shard a ragged last batch.

    Returns the data and the number of real rows (`None`: all of them).
    """
    distribution = keras.distribution.distribution()
    arrays = keras.tree.flatten(data)
    if distribution is None or not all(isinstance(a, np.ndarray) for a in arrays):
        return data, None
    mesh = distribution.device_mesh
    devices = dict(zip(mesh.axis_names, mesh.shape, strict=True))[
        distribution.batch_dim_name
    ]
    if (batch_size or 32) % devices:
        raise ValueError(
            f"Argument `batch_size` must be a multiple of the {devices} devices "
            f"the batch is split over. Received: batch_size={batch_size}"
        )
    count = len(arrays[0])
    padding = -count % devices
    if padding:
        data = keras.tree.map_structure(
            lambda a: np.concatenate([a, np.repeat(a[-1:], padding, axis=0)]), data
        )
    return data, count
