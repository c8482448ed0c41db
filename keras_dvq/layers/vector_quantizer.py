import keras
from keras import ops

from keras_dvq import distribute
from keras_dvq.code_statistics import sums_by_code
from keras_dvq.validation import check_non_negative
from keras_dvq.validation import check_open_unit_interval
from keras_dvq.validation import check_positive
from keras_dvq.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_dvq")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-neighbour vector quantizer with a straight-through gradient.

    Projects encoder features to `embedding_dim` with a 1x1 (dense) layer,
    replaces every projected vector `z_e` by its nearest codebook entry `e`
    and passes the decoder's gradient straight through to the encoder
    (`z_q = z_e + stop_gradient(e - z_e)`). The distance search runs in
    float32 under any dtype policy: half-precision lookups lose codes.

    The latent loss, added with `add_loss`, is
    `latent_loss_weight * (|sg[z_e] - e|^2 + commitment_cost * |z_e - sg[e]|^2)`
    (means over all elements). With `use_ema=True` the codebook is not
    trained by gradients but follows exponential moving averages of the
    encoder outputs assigned to each code, with Laplace smoothing, and the
    loss keeps only the commitment term. With `dead_code_threshold > 0`,
    codes whose moving-average usage falls below the threshold are re-seeded
    from random encoder outputs of the current batch.

    All state lives in variables with `aggregation="mean"`, so that replicas
    of a `tf.distribute` strategy keep identical codebooks.

    Args:
        num_embeddings: int. Number of codes `K`. Defaults to `512`.
        embedding_dim: int. Size `D` of each code. Defaults to `64`.
        commitment_cost: float. Weight `beta` of the commitment term.
            Defaults to `0.25`.
        latent_loss_weight: float. Scale of the whole latent loss; the
            original repo uses `10.0`. Defaults to `10.0`.
        use_ema: bool. Update the codebook by moving averages instead of
            gradients. Defaults to `False`.
        ema_decay: float in (0, 1). Decay of the moving averages (also of the
            usage counts that decide dead codes). Defaults to `0.99`.
        ema_epsilon: float. Laplace smoothing of the cluster sizes.
            Defaults to `1e-5`.
        dead_code_threshold: float. A code whose moving-average number of
            assignments per training step falls below this value is
            restarted. `0` disables restarts. Requires `use_ema=True`: a
            gradient-trained codebook is owned by the optimizer, whose
            moment estimates a restart would leave stale, and JAX's
            stateless training step cannot assign to trainable variables.
            Defaults to `0.0`.
        codebook_initializer: initializer of the codebook. Defaults to a unit
            normal, as PyTorch's `nn.Embedding`.
        seed: int or `None`. Seed of the restart sampling.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `(..., features)`, typically `(N, h, w, F)`.
        training: bool. Whether moving averages and restarts are updated.

    Returns:
        A tuple `(quantized, tokens)`: `quantized` of shape
        `(..., embedding_dim)` in the layer's compute dtype and int32 token
        ids of shape `(...)`.

    Example:

    ```python
    quantizer = VectorQuantizer(num_embeddings=16, embedding_dim=4, use_ema=True)
    features = keras.random.normal((2, 8, 8, 32))
    quantized, tokens = quantizer(features, training=True)  # (2, 8, 8, 4), (2, 8, 8)
    ```

    Reference:
        - [van den Oord et al., 2017](https://arxiv.org/abs/1711.00937)
          (the loss; the EMA codebook of App. A.1).
    """

    def __init__(
        self,
        num_embeddings=512,
        embedding_dim=64,
        commitment_cost=0.25,
        latent_loss_weight=10.0,
        use_ema=False,
        ema_decay=0.99,
        ema_epsilon=1e-5,
        dead_code_threshold=0.0,
        codebook_initializer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.commitment_cost = check_non_negative("commitment_cost", commitment_cost)
        self.latent_loss_weight = check_non_negative(
            "latent_loss_weight", latent_loss_weight
        )
        self.use_ema = bool(use_ema)
        self.ema_decay = check_open_unit_interval("ema_decay", ema_decay)
        self.ema_epsilon = check_positive("ema_epsilon", ema_epsilon)
        self.dead_code_threshold = check_non_negative(
            "dead_code_threshold", dead_code_threshold
        )
        if self.dead_code_threshold > 0 and not self.use_ema:
            raise ValueError(
                "Argument `dead_code_threshold` > 0 requires `use_ema=True` (dead "
                "codes are restarted in the moving-average codebook). Received: "
                f"dead_code_threshold={dead_code_threshold}, use_ema={use_ema}"
            )
        self.codebook_initializer = keras.initializers.get(
            codebook_initializer or keras.initializers.RandomNormal(stddev=1.0)
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.projection = keras.layers.Dense(
            embedding_dim, dtype=self.dtype_policy, name="projection"
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        # autocast=False keeps the codebook float32 under mixed precision.
        self.codebook = self.add_weight(
            name="codebook",
            shape=(self.num_embeddings, self.embedding_dim),
            initializer=self.codebook_initializer,
            trainable=not self.use_ema,
            autocast=False,
            aggregation="mean",
        )
        if self.use_ema:
            # Counts start at one and sums at the codebook itself, so that
            # codebook == ema_embedding_sum / smoothed(ema_cluster_size) holds
            # from the first step on.
            self.ema_cluster_size = self.add_weight(
                name="ema_cluster_size",
                shape=(self.num_embeddings,),
                initializer="ones",
                trainable=False,
                autocast=False,
                aggregation="mean",
            )
            self.ema_embedding_sum = self.add_weight(
                name="ema_embedding_sum",
                shape=(self.num_embeddings, self.embedding_dim),
                initializer="zeros",
                trainable=False,
                autocast=False,
                aggregation="mean",
            )
            # A copy: JAX donates variable buffers, which must not be shared.
            self.ema_embedding_sum.assign(ops.copy(self.codebook.value))

    def call(self, inputs, training=False):
        z_e = self.project(inputs)
        flat = ops.reshape(z_e, (-1, self.embedding_dim))
        flat_tokens = self._nearest_codes(flat)
        tokens = ops.reshape(flat_tokens, ops.shape(z_e)[:-1])
        codes = ops.take(self.codebook, tokens, axis=0)
        if training and self.use_ema:
            self._update_codebook(ops.stop_gradient(flat), flat_tokens)

        # The loss is added last: under tf.distribute the codebook update
        # above syncs the replicas, which take turns in threads sharing this
        # layer's loss list; `VQVAE.call` reads the entry right after.
        commitment = ops.mean(ops.square(z_e - ops.stop_gradient(codes)))
        latent_loss = self.commitment_cost * commitment
        if not self.use_ema:
            latent_loss += ops.mean(ops.square(ops.stop_gradient(z_e) - codes))
        self.add_loss(self.latent_loss_weight * latent_loss)

        quantized = z_e + ops.stop_gradient(codes - z_e)
        return ops.cast(quantized, self.compute_dtype), tokens

    def _nearest_codes(self, flat):
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2: one matmul instead of an
        # (N, K, D) tensor. |z|^2 is the same for every code of a row, so the
        # argmin leaves it out.
        codebook = self.codebook
        distances = ops.sum(ops.square(codebook), axis=1)[None, :] - 2.0 * ops.matmul(
            flat, ops.transpose(codebook)
        )
        return ops.cast(ops.argmin(distances, axis=1), "int32")

    def _update_codebook(self, flat, flat_tokens):
        # Under tf.distribute each replica sees its slice of the batch. The
        # state variables average what the replicas assign
        # (aggregation="mean"), so assigning `replicas * local statistics`
        # yields the global batch's statistics, identical on every replica.
        replicas = distribute.num_replicas()
        decay = self.ema_decay
        counts, sums = sums_by_code(flat, flat_tokens, self.num_embeddings)
        self.ema_cluster_size.assign(
            decay * self.ema_cluster_size + (1.0 - decay) * replicas * counts
        )
        embedding_sum = decay * self.ema_embedding_sum + (1.0 - decay) * replicas * sums
        cluster_size = ops.convert_to_tensor(self.ema_cluster_size)
        if self.dead_code_threshold > 0:
            dead = cluster_size < self.dead_code_threshold
            rows = keras.random.randint(
                (self.num_embeddings,),
                0,
                ops.shape(flat)[0],
                seed=self.seed_generator,
            )
            # A restarted code counts as used `threshold` times, so it stays
            # only if the encoder picks it before the average decays again.
            # Its new value comes from replica 0's encoder outputs.
            restart_sum = ops.take(flat, rows, axis=0) * self.dead_code_threshold
            restart_sum = ops.where(
                distribute.is_first_replica(), replicas * restart_sum, 0.0
            )
            embedding_sum = ops.where(dead[:, None], restart_sum, embedding_sum)
            cluster_size = ops.where(dead, self.dead_code_threshold, cluster_size)
            self.ema_cluster_size.assign(cluster_size)
        self.ema_embedding_sum.assign(embedding_sum)
        total = ops.sum(cluster_size)
        smoothed = (
            (cluster_size + self.ema_epsilon)
            / (total + self.num_embeddings * self.ema_epsilon)
            * total
        )
        self.codebook.assign(self.ema_embedding_sum / smoothed[:, None])

    def set_codebook(self, codes):
        """Replaces the codebook (e.g. by k-means centroids).

        With `use_ema=True` the moving averages are reset consistently: every
        code counts as used once and its running sum is the code itself.

        Args:
            codes: array of shape `(num_embeddings, embedding_dim)`.
        """
        codes = ops.convert_to_tensor(codes, dtype="float32")
        expected = (self.num_embeddings, self.embedding_dim)
        if tuple(codes.shape) != expected:
            raise ValueError(
                f"Argument `codes` must have shape {expected}. "
                f"Received: codes.shape={tuple(codes.shape)}"
            )
        self.codebook.assign(codes)
        if self.use_ema:
            self.ema_cluster_size.assign(ops.ones((self.num_embeddings,)))
            self.ema_embedding_sum.assign(ops.copy(codes))

    def tokenize(self, inputs):
        """Returns only the int32 token ids of `inputs`; no loss, no update."""
        z_e = self.project(inputs)
        flat_tokens = self._nearest_codes(ops.reshape(z_e, (-1, self.embedding_dim)))
        return ops.reshape(flat_tokens, ops.shape(z_e)[:-1])

    def lookup(self, tokens):
        """Returns the code vectors of int token ids, shape `tokens.shape + (D,)`."""
        return ops.cast(ops.take(self.codebook, tokens, axis=0), self.compute_dtype)

    def project(self, inputs):
        """Returns the projected features `z_e` in float32, before the lookup."""
        return ops.cast(self.projection(inputs), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.embedding_dim,), tuple(input_shape[:-1])

    def compute_output_spec(self, inputs, training=False):
        # `add_loss` in `call` would otherwise run on symbolic tensors.
        shape = tuple(inputs.shape[:-1])
        return (
            keras.KerasTensor(shape + (self.embedding_dim,), dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "commitment_cost": self.commitment_cost,
                "latent_loss_weight": self.latent_loss_weight,
                "use_ema": self.use_ema,
                "ema_decay": self.ema_decay,
                "ema_epsilon": self.ema_epsilon,
                "dead_code_threshold": self.dead_code_threshold,
                "codebook_initializer": keras.initializers.serialize(
                    self.codebook_initializer
                ),
                "seed": self.seed,
            }
        )
        return config
