"""The DALL-E dVAE encoder and decoder (stride 8), as in OpenAI's released
`dall_e` package and the original repo's `openai_dalle.py`."""

import keras
from keras import layers
from keras import ops

from keras_dvq.models.layer_chain import LayerChain
from keras_dvq.models.lowering import call_layer
from keras_dvq.utils.validation import check_positive_int

GROUP_COUNT = 4


@keras.saving.register_keras_serializable(package="keras_dvq")
class DalleResidualBlock(keras.layers.Layer):
    """`id_path(x) + post_gain * res_path(x)` with `post_gain = 1 / num_layers^2`.

    The identity path is a 1x1 conv when the channel count changes. The
    residual path is four pre-activated convs of `filters // 4` hidden channels
    whose kernel sizes tell encoder blocks `(3, 3, 3, 1)` from decoder blocks
    `(1, 3, 3, 3)`.

    Args:
        filters: int. Output channels.
        num_layers: int. Total number of residual blocks of the network, for
            the post-gain. Defaults to `8`.
        kernel_sizes: four ints. Defaults to the encoder's `(3, 3, 3, 1)`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    block = DalleResidualBlock(filters=128, num_layers=8)
    block(np.zeros((1, 8, 8, 64))).shape  # (1, 8, 8, 128)
    ```

    Reference:
        - [Ramesh et al., 2021](https://arxiv.org/abs/2102.12092), App. A.2.
    """

    def __init__(self, filters=64, num_layers=8, kernel_sizes=(3, 3, 3, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if len(kernel_sizes) != 4:
            raise ValueError(
                "Argument `kernel_sizes` must hold four kernel sizes. "
                f"Received: kernel_sizes={kernel_sizes}"
            )
        self.kernel_sizes = tuple(kernel_sizes)
        self.post_gain = 1.0 / num_layers**2

    def build(self, input_shape):
        hidden = self.filters // 4
        widths = (hidden, hidden, hidden, self.filters)
        self.res_path = [
            layers.Conv2D(width, size, padding="same", dtype=self.dtype_policy)
            for width, size in zip(widths, self.kernel_sizes, strict=True)
        ]
        shape = input_shape
        for conv in self.res_path:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.id_path = None
        if input_shape[-1] != self.filters:
            self.id_path = layers.Conv2D(self.filters, 1, dtype=self.dtype_policy)
            self.id_path.build(input_shape)

    def call(self, inputs):
        residual = inputs
        for conv in self.res_path:
            residual = call_layer(conv, ops.relu(residual))
        identity = inputs if self.id_path is None else call_layer(self.id_path, inputs)
        return identity + self.post_gain * residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_layers": self.num_layers,
            "kernel_sizes": self.kernel_sizes,
        }


@keras.saving.register_keras_serializable(package="keras_dvq")
class DalleEncoder(LayerChain):
    """The DALL-E dVAE encoder: a 7x7 conv, four groups of residual blocks of
    widths `(1, 2, 4, 8) x n_hid` with 2x2 max-pooling after the first three,
    and a ReLU + 1x1 conv to `output_channels`; stride 8.

    Args:
        n_hid: int. Base width. Defaults to `64`.
        n_blk_per_group: int. Residual blocks per group. Defaults to `2`.
        output_channels: int. Channels handed to the quantizer. Defaults to
            `256`, as the original repo.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    encoder = DalleEncoder(n_hid=64)
    encoder(np.zeros((2, 32, 32, 3))).shape  # (2, 4, 4, 256)
    ```

    Reference:
        - [Ramesh et al., 2021](https://arxiv.org/abs/2102.12092), App. A.2.
    """

    stride = 8

    def __init__(self, n_hid=64, n_blk_per_group=2, output_channels=256, **kwargs):
        super().__init__(**kwargs)
        _set_up(
            self,
            n_hid,
            n_blk_per_group,
            output_channels,
            entry={"kernel_size": 7, "padding": "same"},
            widths=(1, 2, 4, 8),
            kernel_sizes=(3, 3, 3, 1),
            resize=layers.MaxPooling2D,
        )

    def get_config(self):
        return {**super().get_config(), **_config(self)}


@keras.saving.register_keras_serializable(package="keras_dvq")
class DalleDecoder(LayerChain):
    """The DALL-E dVAE decoder: a 1x1 conv, four groups of residual blocks of
    widths `(8, 4, 2, 1) x n_hid` with 2x nearest upsampling after the first
    three, and a ReLU + 1x1 conv to `output_channels`; stride 8.

    Args:
        n_hid: int. Base width. Defaults to `64`.
        n_blk_per_group: int. Residual blocks per group. Defaults to `2`.
        output_channels: int. Channels of the output, e.g. 3 for the Gaussian
            loss and 6 for the logit-Laplace loss. Defaults to `3`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    decoder = DalleDecoder(n_hid=64, output_channels=6)
    decoder(np.zeros((2, 4, 4, 64))).shape  # (2, 32, 32, 6)
    ```

    Reference:
        - [Ramesh et al., 2021](https://arxiv.org/abs/2102.12092), App. A.2.
    """

    stride = 8

    def __init__(self, n_hid=64, n_blk_per_group=2, output_channels=3, **kwargs):
        super().__init__(**kwargs)
        _set_up(
            self,
            n_hid,
            n_blk_per_group,
            output_channels,
            entry={"kernel_size": 1},
            widths=(8, 4, 2, 1),
            kernel_sizes=(1, 3, 3, 3),
            resize=layers.UpSampling2D,
        )

    def get_config(self):
        return {**super().get_config(), **_config(self)}


def _set_up(
    chain, n_hid, n_blk_per_group, output_channels, entry, widths, kernel_sizes, resize
):
    """What the DALL-E encoder and decoder share: checks their arguments,
    keeps them as attributes and fills the chain with a conv to `n_hid`
    channels (`entry`: its other `Conv2D` arguments), four groups of residual
    blocks of `widths x n_hid` channels with a 2x `resize` layer between
    groups, and a ReLU + 1x1 conv to `output_channels`."""
    chain.n_hid = check_positive_int("n_hid", n_hid)
    chain.n_blk_per_group = check_positive_int("n_blk_per_group", n_blk_per_group)
    chain.output_channels = check_positive_int("output_channels", output_channels)
    num_layers = GROUP_COUNT * n_blk_per_group
    dtype = chain.dtype_policy
    chain.chain = [layers.Conv2D(n_hid, dtype=dtype, **entry)]
    for group, width in enumerate(widths):
        chain.chain += [
            DalleResidualBlock(width * n_hid, num_layers, kernel_sizes, dtype=dtype)
            for _ in range(n_blk_per_group)
        ]
        if group < GROUP_COUNT - 1:
            chain.chain.append(resize(2, dtype=dtype))
    chain.chain += [
        layers.ReLU(dtype=dtype),
        layers.Conv2D(output_channels, 1, dtype=dtype),
    ]


def _config(chain):
    return {
        "n_hid": chain.n_hid,
        "n_blk_per_group": chain.n_blk_per_group,
        "output_channels": chain.output_channels,
    }
