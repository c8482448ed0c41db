"""DeepMind's VQ-VAE encoder and decoder (stride 4), as in the sonnet notebook
and the original repo's `deepmind_enc_dec.py`."""

import keras
from keras import layers
from keras import ops

from keras_dvq.models.layer_chain import LayerChain
from keras_dvq.models.lowering import call_layer
from keras_dvq.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_dvq")
class DeepMindResidualBlock(keras.layers.Layer):
    """`relu(x + conv1x1(relu(conv3x3(x))))`, keeping the channel count.

    Args:
        hidden_channels: int. Channels of the 3x3 bottleneck.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    block = DeepMindResidualBlock(hidden_channels=32)
    block(np.zeros((1, 8, 8, 128))).shape  # (1, 8, 8, 128)
    ```
    """

    def __init__(self, hidden_channels=32, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.conv_in = layers.Conv2D(
            self.hidden_channels, 3, padding="same", dtype=self.dtype_policy
        )
        self.conv_out = layers.Conv2D(channels, 1, dtype=self.dtype_policy)
        self.conv_in.build(input_shape)
        self.conv_out.build(self.conv_in.compute_output_shape(input_shape))

    def call(self, inputs):
        hidden = ops.relu(self.conv_in(inputs))
        return ops.relu(inputs + call_layer(self.conv_out, hidden))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels}


@keras.saving.register_keras_serializable(package="keras_dvq")
class DeepMindEncoder(LayerChain):
    """DeepMind's VQ-VAE encoder: two stride-2 4x4 convs, a 3x3 conv and two
    residual blocks; `(N, H, W, C) -> (N, H/4, W/4, 2 * n_hid)`.

    Args:
        n_hid: int. Base width; the output has `2 * n_hid` channels.
            Defaults to `64`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    encoder = DeepMindEncoder(n_hid=64)
    encoder(np.zeros((2, 32, 32, 3))).shape  # (2, 8, 8, 128)
    ```

    Reference:
        - [van den Oord et al., 2017](https://arxiv.org/abs/1711.00937)
    """

    stride = 4

    def __init__(self, n_hid=64, **kwargs):
        super().__init__(**kwargs)
        self.n_hid = check_positive_int("n_hid", n_hid)
        conv = _conv_factory(self.dtype_policy)
        self.output_channels = 2 * n_hid
        self.chain = [
            conv(n_hid, 4, strides=2, activation="relu"),
            conv(2 * n_hid, 4, strides=2, activation="relu"),
            conv(2 * n_hid, 3, activation="relu"),
            DeepMindResidualBlock(n_hid // 2, dtype=self.dtype_policy),
            DeepMindResidualBlock(n_hid // 2, dtype=self.dtype_policy),
        ]

    def get_config(self):
        return {**super().get_config(), "n_hid": self.n_hid}


@keras.saving.register_keras_serializable(package="keras_dvq")
class DeepMindDecoder(LayerChain):
    """DeepMind's VQ-VAE decoder: a 3x3 conv, two residual blocks and two
    stride-2 4x4 transposed convs; `(N, h, w, D) -> (N, 4h, 4w, output_channels)`.

    Args:
        n_hid: int. Base width (`2 * n_hid` channels inside). Defaults to `64`.
        output_channels: int. Channels of the output, e.g. 3 for the Gaussian
            loss and 6 for the logit-Laplace loss. Defaults to `3`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    decoder = DeepMindDecoder(n_hid=64, output_channels=3)
    decoder(np.zeros((2, 8, 8, 64))).shape  # (2, 32, 32, 3)
    ```
    """

    stride = 4

    def __init__(self, n_hid=64, output_channels=3, **kwargs):
        super().__init__(**kwargs)
        self.n_hid = check_positive_int("n_hid", n_hid)
        self.output_channels = check_positive_int("output_channels", output_channels)
        conv = _conv_factory(self.dtype_policy)
        deconv = _conv_factory(self.dtype_policy, layers.Conv2DTranspose)
        self.chain = [
            conv(2 * n_hid, 3, activation="relu"),
            DeepMindResidualBlock(n_hid // 2, dtype=self.dtype_policy),
            DeepMindResidualBlock(n_hid // 2, dtype=self.dtype_policy),
            deconv(n_hid, 4, strides=2, activation="relu"),
            deconv(output_channels, 4, strides=2),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "n_hid": self.n_hid,
            "output_channels": self.output_channels,
        }


def _conv_factory(dtype_policy, conv_class=layers.Conv2D):
    def conv(filters, kernel_size, **kwargs):
        return conv_class(
            filters, kernel_size, padding="same", dtype=dtype_policy, **kwargs
        )

    return conv
