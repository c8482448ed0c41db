"""The VQGAN encoder and decoder (Esser et al., 2021): taming-transformers'
`Encoder`/`Decoder`, the network of diffusers' `VQModel`.

Feature-map levels are numbered from the input: level `i` works at `1 / 2**i`
of the image size, and `attn_levels` names the levels with attention. This
keeps the networks independent of the image size; taming's
`attn_resolutions=(16,)` at resolution 256 with five levels is
`attn_levels=(4,)`.

The networks work on [-1, 1] images, as taming and diffusers: the encoder
doubles its input and the decoder halves its output, so that under the l2
loss (whose in-map is `x - 0.5` and out-map `y + 0.5`) the model reads and
writes [0, 1] images exactly as a converted diffusers model would with
`2 x - 1` and `(y + 1) / 2`.
"""

import keras
from keras import layers
from keras import ops

from keras_dvq.models.layer_chain import LayerChain
from keras_dvq.models.lowering import call_layer
from keras_dvq.utils.validation import check_positive_int

# taming and diffusers normalize with eps 1e-6 throughout.
NORM_EPSILON = 1e-6


def _group_norm(groups, dtype):
    return layers.GroupNormalization(groups, epsilon=NORM_EPSILON, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQGANResidualBlock(keras.layers.Layer):
    """`shortcut(x) + conv(dropout(swish(GN(conv(swish(GN(x)))))))`: two 3x3
    convs; the shortcut is a 1x1 conv when the channel count changes.

    Args:
        filters: int. Output channels.
        dropout: float. Dropout rate before the second conv. Defaults to `0.0`.
        norm_groups: int. Groups of the group normalizations; must divide the
            input and output channels. Defaults to `32`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    block = VQGANResidualBlock(filters=64, norm_groups=8)
    block(np.zeros((1, 8, 8, 32))).shape  # (1, 8, 8, 64)
    ```

    Reference:
        - [He et al., 2016](https://arxiv.org/abs/1603.05027)
    """

    def __init__(self, filters=128, dropout=0.0, norm_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.dropout = _check_rate(dropout)
        self.norm_groups = check_positive_int("norm_groups", norm_groups)

    def build(self, input_shape):
        dtype = self.dtype_policy
        output_shape = self.compute_output_shape(input_shape)
        self.norm1 = _group_norm(self.norm_groups, dtype)
        self.conv1 = layers.Conv2D(self.filters, 3, padding="same", dtype=dtype)
        self.norm2 = _group_norm(self.norm_groups, dtype)
        self.drop = layers.Dropout(self.dropout, dtype=dtype)
        self.conv2 = layers.Conv2D(self.filters, 3, padding="same", dtype=dtype)
        self.norm1.build(input_shape)
        self.conv1.build(input_shape)
        self.norm2.build(output_shape)
        self.conv2.build(output_shape)
        self.shortcut = None
        if input_shape[-1] != self.filters:
            self.shortcut = layers.Conv2D(self.filters, 1, dtype=dtype)
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        hidden = self.conv1(ops.silu(self.norm1(inputs)))
        hidden = self.drop(ops.silu(self.norm2(hidden)), training=training)
        hidden = self.conv2(hidden)
        if self.shortcut is not None:
            inputs = call_layer(self.shortcut, inputs)
        return inputs + hidden

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "dropout": self.dropout,
            "norm_groups": self.norm_groups,
        }


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQGANAttentionBlock(keras.layers.Layer):
    """`x + out(softmax(q k^T / sqrt(C)) v)` over all positions, with one head
    and `q, k, v` dense maps of `GN(x)`; the channel count is kept.

    Args:
        norm_groups: int. Groups of the group normalization. Defaults to `32`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    block = VQGANAttentionBlock(norm_groups=8)
    block(np.zeros((1, 4, 4, 64))).shape  # (1, 4, 4, 64)
    ```

    Reference:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, norm_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.norm_groups = check_positive_int("norm_groups", norm_groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        dtype = self.dtype_policy
        self.norm = _group_norm(self.norm_groups, dtype)
        self.norm.build(input_shape)
        self.query, self.key, self.value, self.out = (
            layers.Dense(channels, dtype=dtype, name=name)
            for name in ("query", "key", "value", "out")
        )
        for dense in (self.query, self.key, self.value, self.out):
            dense.build(input_shape)

    def call(self, inputs):
        batch, height, width, channels = ops.shape(inputs)
        hidden = ops.reshape(self.norm(inputs), (batch, height * width, channels))
        query, key, value = (
            dense(hidden) for dense in (self.query, self.key, self.value)
        )
        scale = ops.cast(channels, query.dtype) ** -0.5
        weights = ops.softmax(ops.einsum("bqc,bkc->bqk", query, key) * scale, axis=-1)
        attended = self.out(ops.einsum("bqk,bkc->bqc", weights, value))
        return inputs + ops.reshape(attended, (batch, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "norm_groups": self.norm_groups}


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQGANDownsample(keras.layers.Layer):
    """Halves the height and width: pads one zero row below and one column to
    the right (taming's asymmetric `(0, 1, 0, 1)`), then a 3x3 stride-2 conv.

    Args:
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    VQGANDownsample()(np.zeros((1, 8, 8, 32))).shape  # (1, 4, 4, 32)
    ```
    """

    def build(self, input_shape):
        self.conv = layers.Conv2D(
            input_shape[-1], 3, strides=2, padding="valid", dtype=self.dtype_policy
        )
        self.conv.build(_padded(input_shape))

    def call(self, inputs):
        return self.conv(ops.pad(inputs, ((0, 0), (0, 1), (0, 1), (0, 0))))

    def compute_output_shape(self, input_shape):
        # A valid 3x3 stride-2 conv of the padded size `n + 1`.
        halved = [
            None if size is None else (size - 2) // 2 + 1 for size in input_shape[1:3]
        ]
        return (input_shape[0], *halved, input_shape[3])


def _padded(shape):
    grow = [None if size is None else size + 1 for size in shape[1:3]]
    return (shape[0], *grow, shape[3])


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQGANEncoder(LayerChain):
    """The VQGAN encoder: a 3x3 conv to `ch`, per level `num_res_blocks`
    residual blocks of `ch * ch_mult[level]` channels (each followed by
    attention at `attn_levels`) and a stride-2 downsampling but after the
    last level, a middle (residual, attention, residual), then GN, swish and a
    3x3 conv to `z_channels`; stride `2 ** (len(ch_mult) - 1)`.

    Its input is doubled first: it expects the l2 loss's [-0.5, 0.5] images
    and runs the network on [-1, 1], as taming and diffusers.

    Args:
        ch: int. Base width. Defaults to `128`.
        ch_mult: tuple of ints. Width multiplier of each level; one level
            per entry. Defaults to `(1, 1, 2, 2, 4)` (taming's ImageNet f16).
        num_res_blocks: int. Residual blocks per level. Defaults to `2`.
        attn_levels: tuple of ints. Levels (0: full resolution) whose
            residual blocks are followed by attention. Defaults to `(4,)`
            (taming's `attn_resolutions=(16,)` at 256 pixels).
        z_channels: int. Output channels. Defaults to `256`.
        dropout: float. Dropout rate of the residual blocks. Defaults to `0.0`.
        norm_groups: int. Group normalization groups; must divide every
            width. Defaults to `32`.
        mid_attention: bool. Whether the middle has its attention block
            (diffusers' `mid_block_add_attention`). Defaults to `True`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    encoder = VQGANEncoder(ch=32, ch_mult=(1, 2), attn_levels=(), z_channels=4,
                           norm_groups=8)
    encoder(np.zeros((2, 16, 16, 3))).shape  # (2, 8, 8, 4)
    ```

    Reference:
        - [Esser et al., 2021](https://arxiv.org/abs/2012.09841)
    """

    def __init__(
        self,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_levels=(4,),
        z_channels=256,
        dropout=0.0,
        norm_groups=32,
        mid_attention=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _set_up(
            self,
            ch,
            ch_mult,
            num_res_blocks,
            attn_levels,
            dropout,
            norm_groups,
            mid_attention,
        )
        self.z_channels = check_positive_int("z_channels", z_channels)
        self.output_channels = self.z_channels
        dtype = self.dtype_policy
        block_kwargs = {"dropout": self.dropout, "norm_groups": self.norm_groups}
        self.chain = [layers.Conv2D(ch, 3, padding="same", dtype=dtype)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                self.chain.append(
                    VQGANResidualBlock(ch * mult, dtype=dtype, **block_kwargs)
                )
                if level in self.attn_levels:
                    self.chain.append(VQGANAttentionBlock(norm_groups, dtype=dtype))
            if level < len(self.ch_mult) - 1:
                self.chain.append(VQGANDownsample(dtype=dtype))
        self.chain += _middle(self, ch * self.ch_mult[-1])
        self.chain += _tail(self, z_channels)

    @property
    def stride(self):
        return 2 ** (len(self.ch_mult) - 1)

    def call(self, inputs, training=None):
        return super().call(inputs * 2.0, training=training)

    def get_config(self):
        return {**super().get_config(), **_config(self), "z_channels": self.z_channels}


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQGANDecoder(LayerChain):
    """The VQGAN decoder: a 1x1 conv from the quantized latents to
    `z_channels` (taming's `post_quant_conv`), a 3x3 conv to
    `ch * ch_mult[-1]`, a middle (residual, attention, residual), then per
    level from the last `num_res_blocks + 1` residual blocks (each followed
    by attention at `attn_levels`) and a nearest 2x upsampling + 3x3 conv but
    after level 0, then GN, swish and a 3x3 conv to `output_channels`.

    Its output is halved last: the network's [-1, 1] images become the l2
    loss's [-0.5, 0.5].

    Args:
        ch: int. Base width. Defaults to `128`.
        ch_mult: tuple of ints. Width multiplier of each level. Defaults to
            `(1, 1, 2, 2, 4)`.
        num_res_blocks: int. The encoder's residual blocks per level; the
            decoder has one more. Defaults to `2`.
        attn_levels: tuple of ints. Levels with attention. Defaults to `(4,)`.
        z_channels: int. Channels after the 1x1 input conv. Defaults to `256`.
        output_channels: int. Channels of the output, e.g. 3 for the
            Gaussian loss and 6 for the logit-Laplace loss. Defaults to `3`.
        dropout: float. Dropout rate of the residual blocks. Defaults to `0.0`.
        norm_groups: int. Group normalization groups. Defaults to `32`.
        mid_attention: bool. Whether the middle has its attention block.
            Defaults to `True`.
        **kwargs: base layer keyword arguments.

    Example:

    ```python
    decoder = VQGANDecoder(ch=32, ch_mult=(1, 2), attn_levels=(), z_channels=4,
                           norm_groups=8)
    decoder(np.zeros((2, 8, 8, 16))).shape  # (2, 16, 16, 3)
    ```

    Reference:
        - [Esser et al., 2021](https://arxiv.org/abs/2012.09841)
    """

    def __init__(
        self,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_levels=(4,),
        z_channels=256,
        output_channels=3,
        dropout=0.0,
        norm_groups=32,
        mid_attention=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _set_up(
            self,
            ch,
            ch_mult,
            num_res_blocks,
            attn_levels,
            dropout,
            norm_groups,
            mid_attention,
        )
        self.z_channels = check_positive_int("z_channels", z_channels)
        self.output_channels = check_positive_int("output_channels", output_channels)
        dtype = self.dtype_policy
        block_kwargs = {"dropout": self.dropout, "norm_groups": self.norm_groups}
        top = ch * self.ch_mult[-1]
        self.chain = [
            layers.Conv2D(z_channels, 1, dtype=dtype),
            layers.Conv2D(top, 3, padding="same", dtype=dtype),
        ]
        self.chain += _middle(self, top)
        for level in reversed(range(len(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                self.chain.append(
                    VQGANResidualBlock(
                        ch * self.ch_mult[level], dtype=dtype, **block_kwargs
                    )
                )
                if level in self.attn_levels:
                    self.chain.append(VQGANAttentionBlock(norm_groups, dtype=dtype))
            if level > 0:
                self.chain += [
                    layers.UpSampling2D(2, interpolation="nearest", dtype=dtype),
                    layers.Conv2D(
                        ch * self.ch_mult[level], 3, padding="same", dtype=dtype
                    ),
                ]
        self.chain += _tail(self, output_channels)

    @property
    def stride(self):
        return 2 ** (len(self.ch_mult) - 1)

    def call(self, inputs, training=None):
        return super().call(inputs, training=training) * 0.5

    def get_config(self):
        return {
            **super().get_config(),
            **_config(self),
            "z_channels": self.z_channels,
            "output_channels": self.output_channels,
        }


def _check_rate(dropout):
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Argument `dropout` must be in [0, 1). Received: dropout={dropout}"
        )
    return dropout


def _set_up(
    chain, ch, ch_mult, num_res_blocks, attn_levels, dropout, norm_groups, mid_attn
):
    """Checks and keeps the arguments the encoder and decoder share."""
    chain.ch = check_positive_int("ch", ch)
    chain.ch_mult = tuple(check_positive_int("ch_mult", mult) for mult in ch_mult)
    if not chain.ch_mult:
        raise ValueError("Argument `ch_mult` must hold at least one multiplier.")
    chain.num_res_blocks = check_positive_int("num_res_blocks", num_res_blocks)
    chain.attn_levels = tuple(int(level) for level in attn_levels)
    if any(not 0 <= level < len(chain.ch_mult) for level in chain.attn_levels):
        raise ValueError(
            f"Argument `attn_levels` must name levels in [0, {len(chain.ch_mult)}) "
            f"(one per `ch_mult` entry). Received: attn_levels={attn_levels}"
        )
    chain.dropout = _check_rate(dropout)
    chain.norm_groups = check_positive_int("norm_groups", norm_groups)
    widths = sorted({ch, *(ch * mult for mult in chain.ch_mult)})
    if any(width % chain.norm_groups for width in widths):
        raise ValueError(
            f"Argument `norm_groups` must divide `ch` and every width ch * ch_mult "
            f"{widths}. Received: norm_groups={norm_groups}"
        )
    chain.mid_attention = bool(mid_attn)


def _middle(chain, width):
    dtype = chain.dtype_policy
    block_kwargs = {"dropout": chain.dropout, "norm_groups": chain.norm_groups}
    middle = [VQGANResidualBlock(width, dtype=dtype, **block_kwargs)]
    if chain.mid_attention:
        middle.append(VQGANAttentionBlock(chain.norm_groups, dtype=dtype))
    middle.append(VQGANResidualBlock(width, dtype=dtype, **block_kwargs))
    return middle


def _tail(chain, filters):
    dtype = chain.dtype_policy
    return [
        _group_norm(chain.norm_groups, dtype),
        layers.Activation("silu", dtype=dtype),
        layers.Conv2D(filters, 3, padding="same", dtype=dtype),
    ]


def _config(chain):
    return {
        "ch": chain.ch,
        "ch_mult": chain.ch_mult,
        "num_res_blocks": chain.num_res_blocks,
        "attn_levels": chain.attn_levels,
        "dropout": chain.dropout,
        "norm_groups": chain.norm_groups,
        "mid_attention": chain.mid_attention,
    }
