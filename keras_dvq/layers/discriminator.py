"""`PatchDiscriminator`: pix2pix's PatchGAN, as taming-transformers uses it."""

import math

import keras
from keras import ops

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int

# Normalizations of the inner blocks. "group" and "layer" normalize each image
# on its own: they keep no running state, so the three discriminator calls of
# an adversarial step (real, reconstructed, reconstructed without gradient to
# the generator) and data-parallel replicas all see the same function.
NORMALIZATIONS = ("group", "layer", "batch", "none")
MAX_GROUPS = 32
MAX_WIDTH_MULTIPLIER = 8


@keras.saving.register_keras_serializable(package="keras_dvq")
class PatchDiscriminator(keras.layers.Layer):
    """Pix2pix's `NLayerDiscriminator`: one real/fake logit per image patch.

    A 4x4 stride-2 convolution with `ndf` filters and LeakyReLU(0.2); then
    `n_layers - 1` more 4x4 stride-2 convolutions and one 4x4 stride-1
    convolution, each without bias, normalized and followed by
    LeakyReLU(0.2), their widths doubling up to `8 * ndf`; last a 4x4
    stride-1 convolution to one channel. Every convolution pads by 1 (as
    taming-transformers' PyTorch network), so a side of `s` pixels gives
    logit maps of side `s // 2 ** n_layers - 2`, which must be at least 1.
    Convolution kernels start from N(0, 0.02), normalization scales from
    N(1, 0.02).

    Args:
        n_layers: int. Strided convolutions (each halves the image).
            Defaults to `3` (taming's; 70x70 receptive field).
        ndf: int. Filters of the first convolution. Defaults to `64`.
        normalization: `"group"` (GroupNormalization with up to 32 groups,
            the default), `"layer"` (one group: the whole feature map of an
            image), `"batch"` (taming's BatchNormalization; its batch
            statistics differ between the calls of a step and between
            replicas) or `"none"`.
        **kwargs: base layer keyword arguments, such as `name`.

    Input: images `(N, H, W, C)`, any range (the model passes its `[0, 1]`
    images mapped to `[-1, 1]`). Output: float logits `(N, h, w, 1)`.

    Example:

    ```python
    discriminator = PatchDiscriminator(n_layers=2, ndf=32)
    logits = discriminator(np.zeros((4, 32, 32, 3)))  # (4, 6, 6, 1)
    ```

    Reference:
        - [Isola et al., 2017](https://arxiv.org/abs/1611.07004) (PatchGAN).
        - [Esser et al., 2021](https://arxiv.org/abs/2012.09841) (VQGAN).
    """

    def __init__(self, n_layers=3, ndf=64, normalization="group", **kwargs):
        super().__init__(**kwargs)
        self.n_layers = check_positive_int("n_layers", n_layers)
        self.ndf = check_positive_int("ndf", ndf)
        self.normalization = check_choice(
            "normalization", normalization, NORMALIZATIONS
        )
        init = keras.initializers.RandomNormal(stddev=0.02)
        # (filters, strides, normalized) of each convolution.
        plan = [(ndf, 2, False)]
        for n in range(1, n_layers):
            plan.append((ndf * min(2**n, MAX_WIDTH_MULTIPLIER), 2, True))
        plan.append((ndf * min(2**n_layers, MAX_WIDTH_MULTIPLIER), 1, True))
        plan.append((1, 1, False))
        self.convs, self.norms = [], []
        for index, (filters, strides, normalized) in enumerate(plan):
            self.convs.append(
                keras.layers.Conv2D(
                    filters,
                    4,
                    strides=strides,
                    padding="valid",
                    use_bias=not normalized,
                    kernel_initializer=init,
                    name=f"conv_{index}",
                )
            )
            self.norms.append(self._norm(filters, index) if normalized else None)

    def _norm(self, filters, index):
        if self.normalization == "none":
            return None
        gamma = keras.initializers.RandomNormal(mean=1.0, stddev=0.02)
        name = f"norm_{index}"
        if self.normalization == "batch":
            return keras.layers.BatchNormalization(gamma_initializer=gamma, name=name)
        groups = 1 if self.normalization == "layer" else math.gcd(MAX_GROUPS, filters)
        return keras.layers.GroupNormalization(
            groups=groups, gamma_initializer=gamma, name=name
        )

    def logit_size(self, size):
        """Side of the logit map for images of side `size`."""
        return size // 2**self.n_layers - 2

    def check_image_shape(self, shape):
        """`BadInput` (naming `n_layers`) where images of this `(N, H, W, C)`
        shape are too small for the depth."""
        for size in shape[1:3]:
            if size is not None and self.logit_size(size) < 1:
                deepest = 0
                while size // 2 ** (deepest + 1) >= 3:
                    deepest += 1
                raise BadInput(
                    f"Argument `n_layers` (--disc_layers) of the patch discriminator "
                    f"must leave at least 3 pixels after its {self.n_layers} halvings "
                    f"of {size}-pixel images (at most {deepest} for this size). "
                    f"Received: n_layers={self.n_layers}"
                )

    def build(self, input_shape):
        self.check_image_shape(input_shape)
        shape = tuple(input_shape)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            shape = (shape[0], _padded(shape[1]), _padded(shape[2]), shape[3])
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if norm is not None:
                norm.build(shape)

    def call(self, images, training=False):
        x = images
        last = len(self.convs) - 1
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = conv(ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))
            if norm is not None:
                x = norm(x, training=training)
            if index < last:
                x = keras.activations.leaky_relu(x, negative_slope=0.2)
        return ops.cast(x, "float32")

    def compute_output_shape(self, input_shape):
        sizes = [
            None if size is None else self.logit_size(size) for size in input_shape[1:3]
        ]
        return (input_shape[0], *sizes, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "n_layers": self.n_layers,
            "ndf": self.ndf,
            "normalization": self.normalization,
        }


def _padded(size):
    return None if size is None else size + 2
