import math

import keras
import numpy as np
from keras import ops

from keras_dvq import distribute
from keras_dvq.layers.quantizer import Quantizer

# Keeps the bounded values strictly inside the outer levels' rounding range.
BOUND_EPSILON = 1e-3


@keras.saving.register_keras_serializable(package="keras_dvq")
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization (FSQ): a fixed grid instead of a codebook.

    Projects encoder features to `len(levels)` numbers, bounds dimension `i`
    to `levels[i]` values with `tanh(z + shift) * half_l - offset` (`half_l =
    (L - 1)(1 + eps) / 2`; `offset = 1/2` and `shift = atanh(offset /
    half_l)` for even `L`, so that the grid stays symmetric) and rounds it,
    with a straight-through gradient; the result is scaled to [-1, 1]. The
    implicit codebook is the product of the levels (`(8, 5, 5, 5)`: 1,000
    codes), all of which are reachable by construction, so there is no
    codebook to collapse, no auxiliary loss and no state.

    Token ids number the grid points as the paper's reference code does: the
    per-dimension level indices `0 .. L - 1` in mixed radix with the basis
    `cumprod([1] + levels[:-1])`, the first dimension fastest.

    With `data_init=True` (the default) the latents are standardized per
    dimension by statistics taken once, on the first training batch, and
    fixed afterwards (the data-dependent init of Glow's ActNorm; under
    `tf.distribute` over the global batch). Without it an encoder whose
    outputs start small (the DeepMind encoder's are about 0.02) rounds every
    position to the central level: the decoder then sees only zeros, its
    ReLUs pass no gradient, and training never starts.

    Quantization runs in float32 under any dtype policy (bfloat16 cannot hold
    every level of a large `L` exactly).

    Args:
        levels: tuple of ints >= 2, the number of values per dimension.
            Defaults to `(8, 5, 5, 5)`, the paper's choice for about 2^10
            codes.
        data_init: bool. Standardize the latents by the first training
            batch's statistics. Defaults to `True`.
        use_projection: bool. Whether a 1x1 (dense) layer maps the inputs to
            `len(levels)` numbers. Defaults to `True`.
        seed: int or `None`. Unused (FSQ draws nothing); kept for the common
            constructor.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `(..., features)`, typically `(N, h, w, F)`.
        training: bool. Unused: FSQ behaves the same in training.

    Returns:
        A tuple `(quantized, tokens)`: `quantized` of shape
        `(..., len(levels))` with values in [-1, 1], in the compute dtype, and
        int32 token ids of shape `(...)` in `[0, prod(levels))`.

    Example:

    ```python
    quantizer = FiniteScalarQuantizer(levels=(8, 5, 5, 5))
    features = keras.random.normal((2, 8, 8, 32))
    quantized, tokens = quantizer(features)  # (2, 8, 8, 4), (2, 8, 8) in [0, 1000)
    same = quantizer.lookup(tokens)  # equals quantized
    ```

    Reference:
        - [Mentzer et al., 2023](https://arxiv.org/abs/2309.15505), sec. 3
          and App. A.1 (the bound and the index arithmetic).
    """

    def __init__(
        self,
        levels=(8, 5, 5, 5),
        data_init=True,
        use_projection=True,
        seed=None,
        **kwargs,
    ):
        levels = _check_levels(levels)
        super().__init__(
            latent_dim=len(levels),
            use_projection=use_projection,
            seed=seed,
            **kwargs,
        )
        self.levels = levels
        self.data_init = bool(data_init)
        self.vocabulary_size = math.prod(levels)
        self.quantized_dim = len(levels)
        levels_array = np.array(levels, dtype="float32")
        self._half_l = (levels_array - 1.0) * (1.0 + BOUND_EPSILON) / 2.0
        self._offset = np.where(np.array(levels) % 2 == 0, 0.5, 0.0).astype("float32")
        self._shift = np.arctanh(self._offset / self._half_l).astype("float32")
        # Rounded values run over -L//2 .. (L-1)//2; dividing by L//2 puts the
        # outermost level at -1.
        self._half_width = (np.array(levels) // 2).astype("float32")
        self._basis = np.cumprod([1] + list(levels[:-1])).astype("int32")
        self._levels = np.array(levels, dtype="int32")

    def build(self, input_shape):
        super().build(input_shape)
        dim = len(self.levels)
        self.latent_shift = self._state("latent_shift", (dim,), "zeros")
        self.latent_scale = self._state("latent_scale", (dim,), "ones")
        self.latents_initialized = self._state("latents_initialized", (), "zeros")

    def _state(self, name, shape, initializer):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    def project(self, inputs):
        latents = super().project(inputs)
        # Copies: the first training step assigns the variables in place
        # after this (PyTorch would find its saved tensors changed).
        shift, scale = (
            ops.copy(ops.convert_to_tensor(variable))
            for variable in (self.latent_shift, self.latent_scale)
        )
        return (latents - shift) * scale

    def _standardize_once(self, latents):
        """On the first training batch: sets the shift and scale to the
        batch's mean and inverse standard deviation per dimension (over the
        global batch) and returns the latents standardized by them; later,
        the latents unchanged. No Python branch on the flag: it is state."""
        flat = ops.stop_gradient(ops.reshape(latents, (-1, len(self.levels))))
        mean = distribute.replica_mean(ops.mean(flat, axis=0))
        # Two passes: E[z^2] - E[z]^2 cancels badly for small spreads.
        variance = distribute.replica_mean(ops.mean(ops.square(flat - mean), axis=0))
        inverse_std = 1.0 / ops.sqrt(variance + 1e-12)
        first = ops.equal(ops.convert_to_tensor(self.latents_initialized), 0.0)
        shift, scale = (
            ops.convert_to_tensor(variable)
            for variable in (self.latent_shift, self.latent_scale)
        )
        # `latents` are already (raw - shift) * scale, with the initial
        # shift 0 and scale 1 on the first batch.
        self.latent_shift.assign(ops.where(first, mean, shift))
        self.latent_scale.assign(ops.where(first, inverse_std, scale))
        self.latents_initialized.assign(1.0)
        return ops.where(first, (latents - mean) * inverse_std, latents)

    def bound(self, latents):
        """The continuous values before rounding, in `(-L/2, L/2)` per
        dimension."""
        shift, half_l, offset = (
            ops.convert_to_tensor(value)
            for value in (self._shift, self._half_l, self._offset)
        )
        return ops.tanh(ops.convert_to_tensor(latents) + shift) * half_l - offset

    def quantize_latents(self, latents, training=False):
        if training and self.data_init:
            latents = self._standardize_once(latents)
        bounded = self.bound(latents)
        rounded = bounded + ops.stop_gradient(ops.round(bounded) - bounded)
        quantized = rounded / ops.convert_to_tensor(self._half_width)
        return quantized, self.tokens_of(latents), ops.zeros((), "float32")

    def tokens_of(self, latents):
        half_width = ops.convert_to_tensor(self._half_width.astype("int32"))
        level_indices = ops.cast(ops.round(self.bound(latents)), "int32") + half_width
        return ops.sum(level_indices * ops.convert_to_tensor(self._basis), axis=-1)

    def codes_of(self, tokens):
        tokens = ops.cast(tokens, "int32")[..., None]
        basis, levels = (
            ops.convert_to_tensor(self._basis),
            ops.convert_to_tensor(self._levels),
        )
        level_indices = (tokens // basis) % levels
        half_width = ops.convert_to_tensor(self._half_width)
        return (ops.cast(level_indices, "float32") - half_width) / half_width

    def get_config(self):
        config = super().get_config()
        config.update({"levels": self.levels, "data_init": self.data_init})
        return config


def _check_levels(levels):
    try:
        values = tuple(int(level) for level in levels)
        valid = values and all(
            value == level and value >= 2
            for value, level in zip(values, levels, strict=True)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "Argument `levels` must be a non-empty sequence of integers >= 2, "
            f"e.g. (8, 5, 5, 5). Received: levels={levels!r}"
        )
    if math.prod(values) >= 2**31:
        raise ValueError(
            "Argument `levels` must give fewer than 2**31 codes (int32 token "
            f"ids). Received: levels={levels!r} ({math.prod(values)} codes)"
        )
    return values
