"""How VQVAE runs its graph methods (keras_dvq/models/inference.py)."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dvq.models import inference
from tests.models.tiny_vqvae import SIZE
from tests.models.tiny_vqvae import built_model
from tests.models.tiny_vqvae import fitted_model
from tests.models.tiny_vqvae import make_images
from tests.models.tiny_vqvae import make_model


def test_encode_needs_a_built_model(images):
    with pytest.raises(ValueError, match="built model"):
        make_model().encode(images)


@pytest.mark.parametrize(
    "method, bad",
    [
        ("decode", np.zeros((2, 4, 4), "float32")),
        ("encode", np.zeros((4, 30, 30, 3), "float32")),
        ("encode", {"pixels": np.zeros((4, SIZE, SIZE, 3), "float32")}),
        # Shapes only known inside the compiled step: the error comes from
        # the trace (on JAX, Keras' predict purges the variables meanwhile).
        ("encode", "dataset of unknown shape"),
    ],
)
def test_model_still_works_after_a_rejected_input(method, bad, images):
    if isinstance(bad, str):
        bad = tf.data.Dataset.from_generator(
            lambda: iter([np.zeros((2, 30, 30, 3), "float32")]),
            output_signature=tf.TensorSpec((None, None, None, 3), "float32"),
        )
    model = built_model()
    tokens = model.encode(images)
    decoded = model.decode(tokens)
    with pytest.raises(ValueError):
        getattr(model, method)(bad)
    np.testing.assert_array_equal(model.decode(tokens), decoded)
    np.testing.assert_array_equal(model.encode(images), tokens)


def test_arrays_are_run_batch_by_batch_as_predict_would(images, monkeypatch):
    model = built_model()
    images = make_images(count=20)  # batches of 8, 8 and 4
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
    expected = {
        "encode": model.encode(dataset),
        "project": model.project(dataset),
        "predict": model.predict(dataset, verbose=0),
    }

    def keras_predict(*args, **kwargs):
        raise AssertionError("Keras' predict ran on an in-memory array")

    monkeypatch.setattr(inference.InferenceModel, "predict", keras_predict)
    for method, value in expected.items():
        result = getattr(model, method)(images, batch_size=8, verbose=0)
        np.testing.assert_allclose(result, value, atol=1e-6, err_msg=method)
    tokens = model.encode(images)  # the default batch size, 32
    np.testing.assert_array_equal(tokens, expected["encode"])
    np.testing.assert_allclose(model.decode(tokens, batch_size=8), expected["predict"])


def test_progress_bars_and_callbacks_still_go_through_keras_predict(images):
    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_predict_batch_end(self, batch, logs=None):
            self.batches += 1

    model = built_model()
    counter = CountBatches()
    model.predict(make_images(count=20), batch_size=8, callbacks=[counter], verbose=0)
    assert counter.batches == 3


def test_inference_models_stay_out_of_the_model(images):
    model = fitted_model(images)
    names = sorted(layer.name for layer in model.layers)
    num_weights = len(model.weights)
    num_variables = len(model.variables)
    model.encode(images)
    model.decode(model.encode(images))
    model.predict(images, verbose=0)
    model.project(images)
    assert sorted(layer.name for layer in model.layers) == names
    assert names == ["decoder", "encoder", "quantizer"]
    assert len(model.weights) == num_weights
    assert len(model.variables) == num_variables
    assert not any("_encode" in v.path or "_decode" in v.path for v in model.weights)


def test_arrays_are_padded_to_whole_batches_per_device(monkeypatch):
    data = make_images(count=5)
    padded, count = inference.pad_for_data_parallel(data, batch_size=4)
    assert padded is data and count is None  # no keras.distribution: as is
    mesh = SimpleNamespace(axis_names=["batch"], shape=(2,))
    two_devices = SimpleNamespace(device_mesh=mesh, batch_dim_name="batch")
    monkeypatch.setattr(keras.distribution, "distribution", lambda: two_devices)
    padded, count = inference.pad_for_data_parallel(data, batch_size=4)
    assert count == 5 and padded.shape == (6, *data.shape[1:])
    np.testing.assert_array_equal(padded[:5], data)
    np.testing.assert_array_equal(padded[5], data[4])
    with pytest.raises(ValueError, match="multiple of the 2 devices.*batch_size=3"):
        inference.pad_for_data_parallel(data, batch_size=3)
