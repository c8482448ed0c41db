import keras
import numpy as np
import pytest
from keras import layers
from keras import ops

from keras_dvq.models.lowering import call_layer
from keras_dvq.models.lowering import lowered_call
from tests.testing import gradients
from tests.testing import random_inputs


def _assert_same_map(layer, input_shape, seed=0, training=True, atol=1e-5):
    """`lowered_call` gives the outputs of `layer(...)` and the same gradients
    with respect to the layer's variables and to the inputs."""
    array = random_inputs(input_shape, seed=seed) - 0.5
    expected = layer(array)
    actual = lowered_call(layer, array, training=training)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(
        ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), atol=atol
    )
    weights = np.linspace(-1, 1, int(np.prod(expected.shape))).reshape(expected.shape)
    weights = ops.convert_to_tensor(weights.astype("float32"))
    inputs = keras.Variable(array)
    variables = [*layer.trainable_variables, inputs]
    grads = gradients(
        lambda: ops.sum(lowered_call(layer, inputs, training=training) * weights),
        variables,
    )
    reference = gradients(lambda: ops.sum(layer(inputs) * weights), variables)
    for grad, ref in zip(grads, reference, strict=True):
        np.testing.assert_allclose(grad, ref, atol=atol * 10, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 8, 8, 6), (3, 5, 7, 4), (1, 1, 1, 3)])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_subpixel_conv_transpose_equals_conv2d_transpose(shape, activation):
    layer = layers.Conv2DTranspose(
        5, 4, strides=2, padding="same", activation=activation
    )
    _assert_same_map(layer, shape)


def test_pointwise_conv_equals_conv2d():
    _assert_same_map(layers.Conv2D(7, 1, activation="relu"), (2, 5, 6, 3))
    _assert_same_map(layers.Conv2D(7, 1, use_bias=False), (2, 5, 6, 3))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 5, 7, 3)])
def test_max_pool_equals_max_pooling2d(shape):
    _assert_same_map(layers.MaxPooling2D(2), shape)


def test_max_pool_gradient_goes_to_first_maximum_of_ties():
    layer = layers.MaxPooling2D(2)
    inputs = keras.Variable(np.zeros((1, 2, 2, 1), "float32"))
    grad = gradients(
        lambda: ops.sum(lowered_call(layer, inputs, training=True)), [inputs]
    )
    np.testing.assert_array_equal(grad[0].ravel(), [1.0, 0.0, 0.0, 0.0])


def test_other_layers_are_called_as_they_are():
    for layer, shape in [
        (layers.Conv2D(4, 3, padding="same"), (1, 6, 6, 2)),
        (layers.Conv2D(4, 1, strides=2), (1, 6, 6, 2)),
        (layers.Conv2DTranspose(4, 3, strides=2, padding="same"), (1, 3, 3, 2)),
        (layers.MaxPooling2D(3), (1, 6, 6, 2)),
    ]:
        inputs = random_inputs(shape)
        np.testing.assert_array_equal(
            ops.convert_to_numpy(lowered_call(layer, inputs, training=True)),
            ops.convert_to_numpy(layer(inputs)),
        )


def test_mixed_precision_keeps_the_compute_dtype(mixed_bfloat16):
    for layer, shape in [
        (layers.Conv2DTranspose(4, 4, strides=2, padding="same"), (1, 3, 3, 2)),
        (layers.Conv2D(4, 1), (1, 3, 3, 2)),
        (layers.MaxPooling2D(2), (1, 4, 4, 2)),
    ]:
        inputs = random_inputs(shape)
        expected = layer(inputs)
        actual = lowered_call(layer, inputs, training=True)
        assert keras.backend.standardize_dtype(actual.dtype) == "bfloat16"
        np.testing.assert_allclose(
            ops.convert_to_numpy(ops.cast(actual, "float32")),
            ops.convert_to_numpy(ops.cast(expected, "float32")),
            atol=0.05,
        )


def test_only_jax_runs_the_lowered_forms():
    layer = layers.Conv2D(4, 1)
    inputs = random_inputs((1, 3, 3, 2))
    layer.build(inputs.shape)
    calls = []
    original = layer.call
    layer.call = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    call_layer(layer, inputs)
    assert bool(calls) == (keras.backend.backend() != "jax")
