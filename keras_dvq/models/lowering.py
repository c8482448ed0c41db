"""Equivalent formulations of layers that XLA on CPU lowers poorly.

Profiling the training step on JAX (XLA:CPU, batch 128, 32x32 images; see
docs/benchmarks.md) put most of its time in three gradients:

- `Conv2DTranspose` (4x4, stride 2): an input-dilated convolution whose
  forward and backward pass took 1.17 s of the DeepMind decoder's 1.36 s
  (TensorFlow: 48 ms). Computed here as a sub-pixel convolution (Shi et
  al., 2016): a
  3x3 stride-1 convolution with `4 * filters` outputs, one group per output
  phase (row parity, column parity), then a depth-to-space shuffle.
- 1x1 `Conv2D`: its kernel gradient ran 5-7x slower than the same product
  as a matrix multiplication, which it is.
- `MaxPooling2D` (2x2, stride 2): its gradient (select-and-scatter) ran 3x
  slower than a reshape into 2x2 windows, an argmax and a one-hot mask.
  Only in training: the forward pass alone is faster as it is.

`call_layer(layer, x)` runs such a layer through its formulation here on
JAX, with the layer's own variables (same parameters, checkpoints and
`.keras` files) and the same outputs and gradients up to float rounding
(tested on every backend); any other layer, and every layer on TensorFlow
and PyTorch, is simply called: their native kernels are fast, and their
numbers stay exactly what they were.
"""

import keras
from keras import layers
from keras import ops

# Output phase r -> {input offset d: tap index k of the 4-tap kernel}: for
# output pixel o = 2m + r of a 4-tap, stride-2, "same" transposed conv,
# y[2m] = x[m] w[1] + x[m-1] w[3] and y[2m+1] = x[m+1] w[0] + x[m] w[2].
_TAPS = ({-1: 3, 0: 1}, {0: 2, 1: 0})


def call_layer(layer, inputs, training=None):
    """`layer(inputs, training=training)`; on JAX through `lowered_call`."""
    if keras.backend.backend() == "jax":
        return lowered_call(layer, inputs, training=training)
    return layer(inputs, training=training)


def lowered_call(layer, inputs, training=None):
    """`layer(inputs, training=training)`, through an equivalent formulation
    where this module has one for the layer's configuration."""
    if _is_subpixel_compatible(layer):
        return _subpixel_conv_transpose(layer, inputs)
    if _is_pointwise_conv(layer):
        return _pointwise_conv(layer, inputs)
    if training and _is_halving_max_pool(layer):
        return _max_pool_2x2(layer, inputs)
    return layer(inputs, training=training)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_subpixel_compatible(layer):
    return (
        isinstance(layer, layers.Conv2DTranspose)
        and tuple(layer.kernel_size) == (4, 4)
        and tuple(layer.strides) == (2, 2)
        and layer.padding == "same"
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.output_padding is None
        and _channels_last(layer)
    )


def _is_pointwise_conv(layer):
    return (
        type(layer) is layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and _channels_last(layer)
    )


def _is_halving_max_pool(layer):
    return (
        isinstance(layer, layers.MaxPooling2D)
        and tuple(layer.pool_size) == (2, 2)
        and tuple(layer.strides) == (2, 2)
        and _channels_last(layer)
    )


def _finish(layer, outputs):
    """Bias and activation, in the layer's compute dtype."""
    if layer.use_bias:
        outputs = outputs + ops.cast(layer.bias, layer.compute_dtype)
    return layer.activation(outputs) if layer.activation is not None else outputs


def _subpixel_conv_transpose(layer, inputs):
    dtype = layer.compute_dtype
    kernel = ops.cast(layer.kernel, dtype)  # (4, 4, filters, in)
    outputs = ops.conv(ops.cast(inputs, dtype), _phase_kernel(kernel), padding="same")
    return _finish(layer, _depth_to_space(outputs, layer.filters))


def _phase_kernel(kernel):
    """(4, 4, filters, in) -> (3, 3, in, 4 * filters), phases (ry, rx) major."""
    kernel = ops.transpose(kernel, (0, 1, 3, 2))  # (4, 4, in, filters)
    zeros = ops.zeros_like(kernel[0, 0])
    rows = []
    for dy in (-1, 0, 1):
        columns = []
        for dx in (-1, 0, 1):
            phases = []
            for ry in (0, 1):
                for rx in (0, 1):
                    ky, kx = _TAPS[ry].get(dy), _TAPS[rx].get(dx)
                    missing = ky is None or kx is None
                    phases.append(zeros if missing else kernel[ky, kx])
            columns.append(ops.concatenate(phases, axis=-1))
        rows.append(ops.stack(columns, axis=0))
    return ops.stack(rows, axis=0)


def _depth_to_space(outputs, filters):
    """(N, h, w, 4 * filters) with phases (ry, rx) -> (N, 2h, 2w, filters)."""
    height, width = ops.shape(outputs)[1:3]
    outputs = ops.reshape(outputs, (-1, height, width, 2, 2, filters))
    outputs = ops.transpose(outputs, (0, 1, 3, 2, 4, 5))
    return ops.reshape(outputs, (-1, 2 * height, 2 * width, filters))


def _pointwise_conv(layer, inputs):
    dtype = layer.compute_dtype
    kernel = ops.cast(layer.kernel, dtype)[0, 0]  # (in, filters)
    return _finish(layer, ops.matmul(ops.cast(inputs, dtype), kernel))


def _max_pool_2x2(layer, inputs):
    # The gradient goes to the first maximum of each window in row-major
    # order, as MaxPooling2D's does (a plain max would split it among ties).
    height, width, channels = ops.shape(inputs)[1:4]
    if (height % 2 or width % 2) and layer.padding == "same":
        return layer(inputs, training=True)  # padded windows: not ours
    height, width = height // 2, width // 2
    inputs = ops.cast(inputs, layer.compute_dtype)[:, : 2 * height, : 2 * width]
    windows = ops.reshape(inputs, (-1, height, 2, width, 2, channels))
    windows = ops.transpose(windows, (0, 1, 3, 2, 4, 5))
    windows = ops.reshape(windows, (-1, height, width, 4, channels))
    first_max = ops.one_hot(ops.argmax(windows, axis=3), 4, axis=3, dtype=windows.dtype)
    return ops.sum(windows * first_max, axis=3)
