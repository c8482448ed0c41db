"""The contract every quantizer of keras-dvq follows."""

import keras
from keras import ops

from keras_dvq.utils.validation import check_positive_int


class Quantizer(keras.layers.Layer):
    """Base class of the quantizers: what `VQVAE`, the export, token shards,
    the usage metrics and the token prior rely on.

    A quantizer maps encoder features `(..., F)` to quantized latents
    `(..., quantized_dim)` and int32 token ids `(..., *token_shape)` in
    `[0, vocabulary_size)`:

    - `projection`, a `Dense` layer named `"projection"`, maps features to the
      `latent_dim` numbers the quantization works on (`use_projection=False`
      makes it an identity, for inputs that already have that size);
    - `call(inputs, training)` returns `(quantized, tokens)` and adds the
      latent loss with `add_loss`, once per call; with `return_loss=True` it
      returns `(quantized, tokens, latent_loss)` instead and adds nothing,
      for a caller that adds the loss itself (`VQVAE`: under `tf.distribute`
      replicas share the layer's loss list, so reading it back could give
      another replica's loss);
    - `tokenize(inputs)` returns the tokens only (no loss, no state change);
    - `lookup(tokens)` returns the quantized latents of tokens: at inference,
      `lookup(tokenize(x))` equals `call(x)[0]` up to float rounding;
    - `project(inputs)` returns the float32 latents before quantization.

    Subclasses pass `vocabulary_size` and `quantized_dim` (which defaults to
    `latent_dim`) to this constructor, set `token_shape` for several ids per
    position (`()` by default), and implement:

    - `quantize_latents(latents, training)` -> `(quantized, tokens, latent_loss)` on
      float32 latents, updating state (moving averages) in training;
    - `tokens_of(latents)` -> tokens, with no side effect;
    - `codes_of(tokens)` -> float32 quantized latents.

    Quantization runs in float32 under any dtype policy (half precision
    loses codes); `quantized` comes back in the compute dtype. All state lives
    in variables with `aggregation="mean"`, updated so that replicas of a
    `tf.distribute` strategy stay identical (see `VectorQuantizer`).

    Args:
        latent_dim: int. Output size of the projection.
        vocabulary_size: int. Number of token ids.
        quantized_dim: int or `None`. Size of the quantized latents; `None`
            means `latent_dim`.
        use_projection: bool. Whether `projection` is a `Dense` layer (else an
            identity: inputs must have `latent_dim` features). Defaults to
            `True`.
        projection_dtype: dtype policy of the projection, or `None` for the
            layer's own.
        seed: int or `None`. Seed of the layer's random draws.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Example:

    ```python
    class SignQuantizer(Quantizer):  # 2 ** 4 codes: the signs of 4 numbers
        def __init__(self, **kwargs):
            super().__init__(latent_dim=4, vocabulary_size=16, **kwargs)

        def quantize_latents(self, latents, training=False):
            signs = ops.where(latents > 0, 1.0, -1.0)
            quantized = latents + ops.stop_gradient(signs - latents)
            return quantized, self.tokens_of(latents), ops.zeros(())

        def tokens_of(self, latents):
            bits = ops.cast(latents > 0, "int32")
            return ops.sum(bits * ops.array([1, 2, 4, 8], "int32"), axis=-1)

        def codes_of(self, tokens):
            bits = (tokens[..., None] // ops.array([1, 2, 4, 8], "int32")) % 2
            return ops.cast(2 * bits - 1, "float32")
    ```
    """

    token_shape = ()
    # Whether `initialize_codes` (what KMeansInit calls) is implemented.
    initializable_codes = False

    def __init__(
        self,
        latent_dim,
        vocabulary_size=None,
        quantized_dim=None,
        use_projection=True,
        projection_dtype=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.vocabulary_size = vocabulary_size
        self.quantized_dim = latent_dim if quantized_dim is None else quantized_dim
        self.use_projection = bool(use_projection)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        if self.use_projection:
            self.projection = keras.layers.Dense(
                latent_dim,
                dtype=projection_dtype or self.dtype_policy,
                name="projection",
            )
        else:
            self.projection = keras.layers.Identity(name="projection")

    def build(self, input_shape):
        if not self.use_projection and input_shape[-1] != self.latent_dim:
            raise ValueError(
                f"With use_projection=False, the inputs of {type(self).__name__} "
                f"must have latent_dim={self.latent_dim} features. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        self.projection.build(input_shape)

    def call(self, inputs, training=False, return_loss=False):
        quantized, tokens, latent_loss = self.quantize_latents(
            self.project(inputs, training=training), training=training
        )
        quantized = ops.cast(quantized, self.compute_dtype)
        if return_loss:
            return quantized, tokens, latent_loss
        self.add_loss(latent_loss)
        return quantized, tokens

    def project(self, inputs, training=False):
        """Returns the float32 latents that the quantization works on."""
        return ops.cast(self.projection(inputs), "float32")

    def tokenize(self, inputs):
        """Returns only the int32 token ids of `inputs`; no loss, no update."""
        return self.tokens_of(self.project(inputs))

    def lookup(self, tokens):
        """Returns the quantized latents of int token ids `(..., *token_shape)`
        in the compute dtype, shape `(..., quantized_dim)`."""
        return ops.cast(self.codes_of(tokens), self.compute_dtype)

    def quantize_latents(self, latents, training=False):
        raise NotImplementedError(
            f"{type(self).__name__} must implement quantize_latents"
        )

    def tokens_of(self, latents):
        raise NotImplementedError(f"{type(self).__name__} must implement tokens_of")

    def codes_of(self, tokens):
        raise NotImplementedError(f"{type(self).__name__} must implement codes_of")

    def initialize_codes(self, latents, num_iterations=20, seed=None, verbose=0):
        """Sets the codes from a sample of latents `(n, latent_dim)` (k-means,
        for quantizers with a nearest-neighbour codebook). What `KMeansInit`
        calls; quantizers without such a codebook raise `ValueError`."""
        raise ValueError(not_initializable_message(self))

    def add_codebook(self, shape, initializer, trainable=True, name="codebook"):
        """A float32 codebook variable (also under mixed precision), averaged
        across replicas."""
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=trainable,
            autocast=False,
            aggregation="mean",
        )

    def compute_output_shape(self, input_shape):
        positions = tuple(input_shape[:-1])
        return positions + (self.quantized_dim,), positions + tuple(self.token_shape)

    def compute_output_spec(self, inputs, training=False, return_loss=False):
        # `add_loss` in `call` would otherwise run on symbolic tensors.
        quantized_shape, token_shape = self.compute_output_shape(inputs.shape)
        specs = (
            keras.KerasTensor(quantized_shape, dtype=self.compute_dtype),
            keras.KerasTensor(token_shape, dtype="int32"),
        )
        if return_loss:
            return specs + (keras.KerasTensor((), dtype="float32"),)
        return specs

    def get_config(self):
        config = super().get_config()
        config.update({"use_projection": self.use_projection, "seed": self.seed})
        return config


def check_codebook_size(num_embeddings, embedding_dim):
    """The checked `(num_embeddings, embedding_dim)` of a quantizer with
    `num_embeddings` codes of `embedding_dim` numbers."""
    return (
        check_positive_int("num_embeddings", num_embeddings),
        check_positive_int("embedding_dim", embedding_dim),
    )


def get_codebook_initializer(identifier):
    """The initializer of a learned codebook; by default a unit normal, as
    PyTorch's `nn.Embedding`."""
    return keras.initializers.get(
        identifier or keras.initializers.RandomNormal(stddev=1.0)
    )


def not_initializable_message(quantizer):
    return (
        "KMeansInit needs a quantizer with a nearest-neighbour codebook (a "
        "VectorQuantizer or ResidualVectorQuantizer: vq_flavor 'vq' or "
        f"'rvq'). Received: quantizer of type {type(quantizer).__name__}"
    )


def first_maximum(scores):
    """The index of the maximum along the last axis, the lowest among equal
    maxima, as int32: `ops.argmax(scores, axis=-1)`.

    On TensorFlow, `ops.argmax` first rewrites every -0.0 of its input
    (Keras' flush-to-zero fix: four elementwise passes, which XLA fuses on
    JAX but TensorFlow runs one by one): 40% of the code search at 8,192
    codes. `top_k` with `k=1` makes one pass and puts the lower index
    first among equal values (documented), so it returns the same indices.
    PyTorch's `topk` documents no such order: it keeps `ops.argmax`.
    """
    if keras.backend.backend() == "tensorflow":
        return ops.cast(ops.top_k(scores, k=1)[1][..., 0], "int32")
    return ops.cast(ops.argmax(scores, axis=-1), "int32")


# Keras' 1e-3 would dominate the variance of features as small as an encoder's
# at initialization.
FEATURE_NORMALIZATION_EPSILON = 1e-5


def feature_normalization():
    """The `normalize_features` step of `FiniteScalarQuantizer` and
    `LookupFreeQuantizer`: each position's features standardized over their
    channels, `(x - mean(x)) / sqrt(var(x) + 1e-5)`, without a learned scale
    or offset (a `LayerNormalization` with `center=False, scale=False`).

    It runs before the projection, so that the projection sees centred,
    unit-scale inputs whatever the encoder's last layer (the DeepMind
    encoder's ends in a ReLU: its features are small and non-negative). It
    has no weights and behaves the same in training and inference; it runs
    in float32.
    """
    return keras.layers.LayerNormalization(
        center=False,
        scale=False,
        epsilon=FEATURE_NORMALIZATION_EPSILON,
        dtype="float32",
        name="feature_normalization",
    )
