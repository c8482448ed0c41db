import keras
import numpy as np
from keras import ops

from keras_dvq import distribution
from keras_dvq.layers.quantizer import Quantizer
from keras_dvq.layers.quantizer import feature_normalization
from keras_dvq.ops.code_statistics import entropy
from keras_dvq.utils.validation import check_non_negative
from keras_dvq.utils.validation import check_positive

# The batch entropy needs a (positions, 2 ** codebook_bits) table.
MAX_CODEBOOK_BITS = 16
# The defaults before issue 31, for files and run records that do not name
# them: no feature normalization, and a commitment term of weight 0.25.
OLD_DEFAULTS = {"normalize_features": False, "commitment_cost": 0.25}


@keras.saving.register_keras_serializable(package="keras_dvq")
class LookupFreeQuantizer(Quantizer):
    """Lookup-free quantization (LFQ): each latent number becomes its sign.

    Projects encoder features to `codebook_bits` numbers `z` and quantizes
    each to `-1` or `+1` with a straight-through gradient; the implicit
    codebook is `{-1, 1} ** codebook_bits`, with no distances to compute and
    no codebook to learn. The token id is the binary number of the signs
    (bit `i` set where `z_i > 0`, the first dimension the least significant).

    What keeps the codes in use is the entropy loss of MAGVIT-v2: with the
    soft assignment `q(c | z) = softmax_c(2 * inverse_temperature * z . c)`
    over all codes `c`, it is

        entropy_loss_weight
            * (mean_n H(q(. | z_n)) - diversity_gamma * H(mean_n q(. | z_n)))

    which makes each position confident and the batch spread over the
    codebook; an optional commitment term `commitment_cost * |z -
    sg(sign z)|^2` (mean) pulls `z` to its code. It is off by default, as in
    vector-quantize-pytorch: on `sample` a weight of 0.25 cost 0.26-0.35 dB
    on each of three seeds (96-98% of the codes in use without it, 99% with
    it; docs/quantizers.md). Under a `tf.distribute` strategy the
    batch-averaged distribution is the global batch's (an all-reduce across
    replicas, as the EMA statistics of `VectorQuantizer`); under JAX's data
    parallelism the step sees the global batch anyway. The loss needs a
    `(positions, 2 ** codebook_bits)` table, hence `codebook_bits <= 16`.
    Everything runs in float32 under any dtype policy.

    With `normalize_features=True` (the default) each position's input
    features are standardized over their channels, without a learned scale
    or offset, before the projection (`feature_normalization`): an encoder
    ending in a ReLU otherwise gives the projection non-negative inputs,
    which bias the signs (MAGVIT-v2's authors call the normalization
    important). On `sample` it gave 0.7-1.1 dB on two seeds each with 99% of
    the codes in use, and without it vector-quantize-pytorch's LFQ collapsed
    to one code in the same loop (docs/quantizers.md). Files saved before
    this default load as they were trained (without it).

    Args:
        codebook_bits: int in [1, 16]. Bits per token; `2 ** codebook_bits`
            codes. Defaults to `10`.
        entropy_loss_weight: float. Weight of the entropy loss. Defaults to
            `0.1`, MAGVIT-v2's.
        diversity_gamma: float. Weight of the batch entropy against the
            per-position entropy. Defaults to `1.0`.
        commitment_cost: float. Weight of the commitment term. Defaults to
            `0.0` (files saved before issue 31 load with their `0.25`).
        inverse_temperature: float. Sharpness of the soft assignment of the
            entropy loss. Defaults to `100.0` (as vector-quantize-pytorch).
        use_projection: bool. Whether a 1x1 (dense) layer maps the inputs to
            `codebook_bits` numbers. Defaults to `True`.
        seed: int or `None`. Unused (LFQ draws nothing).
        normalize_features: bool. Standardize each position's features over
            their channels (no scale or offset) before the projection.
            Defaults to `True`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `(..., features)`, typically `(N, h, w, F)`.
        training: bool. Unused: LFQ behaves the same in training.

    Returns:
        A tuple `(quantized, tokens)`: `quantized` of shape
        `(..., codebook_bits)` with values `+-1`, in the compute dtype, and
        int32 token ids of shape `(...)` in `[0, 2 ** codebook_bits)`.

    Example:

    ```python
    quantizer = LookupFreeQuantizer(codebook_bits=10)
    features = keras.random.normal((2, 8, 8, 32))
    quantized, tokens = quantizer(features, training=True)  # (2, 8, 8, 10), (2, 8, 8)
    latent_loss = quantizer.losses[0]  # the entropy loss
    ```

    Reference:
        - [Yu et al., 2023](https://arxiv.org/abs/2310.05737) (MAGVIT-v2),
          sec. 3.1, eq. 5 (the entropy penalty).
    """

    def __init__(
        self,
        codebook_bits=10,
        entropy_loss_weight=0.1,
        diversity_gamma=1.0,
        commitment_cost=0.0,
        inverse_temperature=100.0,
        use_projection=True,
        seed=None,
        normalize_features=True,
        **kwargs,
    ):
        if (
            isinstance(codebook_bits, bool)
            or not isinstance(codebook_bits, (int, np.integer))
            or not 1 <= codebook_bits <= MAX_CODEBOOK_BITS
        ):
            raise ValueError(
                "Argument `codebook_bits` must be an integer in "
                f"[1, {MAX_CODEBOOK_BITS}]. Received: codebook_bits={codebook_bits!r}"
            )
        codebook_bits = int(codebook_bits)
        super().__init__(
            latent_dim=codebook_bits,
            vocabulary_size=2**codebook_bits,
            use_projection=use_projection,
            seed=seed,
            **kwargs,
        )
        self.codebook_bits = codebook_bits
        self.entropy_loss_weight = check_non_negative(
            "entropy_loss_weight", entropy_loss_weight
        )
        self.diversity_gamma = check_non_negative("diversity_gamma", diversity_gamma)
        self.commitment_cost = check_non_negative("commitment_cost", commitment_cost)
        self.inverse_temperature = check_positive(
            "inverse_temperature", inverse_temperature
        )
        self._bit_values = 2 ** np.arange(codebook_bits, dtype="int32")
        self.normalize_features = bool(normalize_features)
        if self.normalize_features:
            self.feature_normalization = feature_normalization()

    def build(self, input_shape):
        super().build(input_shape)
        if self.normalize_features:
            self.feature_normalization.build(input_shape)

    def project(self, inputs, training=False):
        if self.normalize_features:
            inputs = self.feature_normalization(inputs)
        return super().project(inputs)

    def quantize_latents(self, latents, training=False):
        signs = ops.where(latents > 0, 1.0, -1.0)
        quantized = latents + ops.stop_gradient(signs - latents)
        commitment = ops.mean(ops.square(latents - signs))
        per_position, batch = self.entropies(latents)
        entropy_loss = per_position - self.diversity_gamma * batch
        latent_loss = (
            self.entropy_loss_weight * entropy_loss + self.commitment_cost * commitment
        )
        return quantized, self.tokens_of(latents), latent_loss

    def entropies(self, latents):
        """`(mean_n H(q(. | z_n)), H(mean_n q(. | z_n)))` in nats, the two
        terms of the entropy loss (the batch average global across
        `tf.distribute` replicas)."""
        flat = ops.reshape(latents, (-1, self.codebook_bits))
        codes = self.codes_of(ops.arange(self.vocabulary_size, dtype="int32"))
        logits = 2.0 * self.inverse_temperature * ops.matmul(flat, ops.transpose(codes))
        log_q = ops.log_softmax(logits, axis=-1)
        q = ops.exp(log_q)
        per_position = -ops.mean(ops.sum(q * log_q, axis=-1))
        average_q = distribution.replica_mean(ops.mean(q, axis=0))
        return per_position, entropy(average_q)

    def tokens_of(self, latents):
        bits = ops.cast(latents > 0, "int32")
        return ops.sum(bits * ops.convert_to_tensor(self._bit_values), axis=-1)

    def codes_of(self, tokens):
        tokens = ops.cast(tokens, "int32")[..., None]
        bits = (tokens // ops.convert_to_tensor(self._bit_values)) % 2
        return ops.cast(2 * bits - 1, "float32")

    @classmethod
    def from_config(cls, config):
        return super().from_config({**OLD_DEFAULTS, **config})

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "codebook_bits": self.codebook_bits,
                "entropy_loss_weight": self.entropy_loss_weight,
                "diversity_gamma": self.diversity_gamma,
                "commitment_cost": self.commitment_cost,
                "inverse_temperature": self.inverse_temperature,
                "normalize_features": self.normalize_features,
            }
        )
        return config
