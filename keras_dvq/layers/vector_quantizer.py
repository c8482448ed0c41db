import keras
from keras import ops

from keras_dvq import distribution
from keras_dvq.layers.quantizer import Quantizer
from keras_dvq.layers.quantizer import check_codebook_size
from keras_dvq.layers.quantizer import first_maximum
from keras_dvq.layers.quantizer import get_codebook_initializer
from keras_dvq.ops.code_statistics import sums_by_code
from keras_dvq.ops.kmeans import kmeans
from keras_dvq.utils.validation import check_non_negative
from keras_dvq.utils.validation import check_open_unit_interval
from keras_dvq.utils.validation import check_positive

# The code search computes its (rows, codes) distance matrix in blocks of at
# most this many float32 elements (64 MiB). At DALL-E's sizes, 8,192 codes and
# 32x32 token grids, a batch of 128 images has 131,072 rows: 4 GiB of
# distances at once, and as much again for each temporary.
SEARCH_BLOCK_ELEMENTS = 2**24


@keras.saving.register_keras_serializable(package="keras_dvq")
class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer with a straight-through gradient.

    Projects encoder features to `embedding_dim` with a 1x1 (dense) layer,
    replaces every projected vector `z_e` by its nearest codebook entry `e`
    and passes the decoder's gradient straight through to the encoder
    (`z_q = z_e + stop_gradient(e - z_e)`). The distance search runs in
    float32 under any dtype policy: half-precision lookups lose codes. It
    holds at most `SEARCH_BLOCK_ELEMENTS` distances (64 MiB) at a time,
    searching block by block where a batch has more rows, so that 8,192 codes
    on large token grids fit in an accelerator's memory.

    The latent loss, added with `add_loss`, is
    `latent_loss_weight * (|sg[z_e] - e|^2 + commitment_cost * |z_e - sg[e]|^2)`
    (means over all elements). With `use_ema=True` the codebook is not
    trained by gradients but follows exponential moving averages of the
    encoder outputs assigned to each code, with Laplace smoothing, and the
    loss keeps only the commitment term. With `dead_code_threshold > 0`,
    codes whose moving-average usage falls below the threshold are re-seeded
    from random encoder outputs of the current batch.

    Two options change the geometry or the gradient:

    - `use_cosine_sim=True` l2-normalizes the projected vectors and the codes
      (ViT-VQGAN's factorized codes): the nearest code is the one of largest
      cosine similarity, and quantized vectors lie on the unit sphere.
    - `rotation_trick=True` replaces the straight-through identity by the
      rotation trick: `z_q = sg(lambda R) z_e` with `R` the rotation taking
      `z_e`'s direction to `e`'s and `lambda = |e| / |z_e|`. The forward value
      is still `e`; the gradient reaching `z_e` is `lambda R^T` times the
      decoder's, so it carries the angle and length between `z_e` and `e`.

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
        use_cosine_sim: bool. Match and quantize l2-normalized vectors.
            Defaults to `False`.
        rotation_trick: bool. Pass gradients through the rotation trick
            instead of the straight-through identity. Defaults to `False`.
        codebook_initializer: initializer of the codebook. Defaults to a unit
            normal, as PyTorch's `nn.Embedding`.
        use_projection: bool. `False` quantizes the inputs themselves (they
            must have `embedding_dim` features), as the stages of a
            `ResidualVectorQuantizer` do. Defaults to `True`.
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
        - [Yu et al., 2021](https://arxiv.org/abs/2110.04627) (ViT-VQGAN,
          sec. 3.2: factorized, l2-normalized codes).
        - [Fifty et al., 2024](https://arxiv.org/abs/2410.06424) (the
          rotation trick, eq. 4 and sec. 4.2).
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
        use_cosine_sim=False,
        rotation_trick=False,
        codebook_initializer=None,
        use_projection=True,
        seed=None,
        **kwargs,
    ):
        num_embeddings, embedding_dim = check_codebook_size(
            num_embeddings, embedding_dim
        )
        super().__init__(
            latent_dim=embedding_dim,
            vocabulary_size=num_embeddings,
            use_projection=use_projection,
            seed=seed,
            **kwargs,
        )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
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
        self.use_cosine_sim = bool(use_cosine_sim)
        self.rotation_trick = bool(rotation_trick)
        self.codebook_initializer = get_codebook_initializer(codebook_initializer)

    initializable_codes = True

    def build(self, input_shape):
        super().build(input_shape)
        self.codebook = self.add_codebook(
            (self.num_embeddings, self.embedding_dim),
            self.codebook_initializer,
            trainable=not self.use_ema,
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

    def project(self, inputs, training=False):
        latents = super().project(inputs, training=training)
        if self.use_cosine_sim:
            return _l2_normalize(latents)
        return latents

    def quantize_latents(self, latents, training=False):
        tokens = self.tokens_of(latents)
        codes = self.codes_of(tokens)
        if training and self.use_ema:
            flat = ops.reshape(latents, (-1, self.embedding_dim))
            self._update_codebook(ops.stop_gradient(flat), ops.reshape(tokens, (-1,)))

        commitment = ops.mean(ops.square(latents - ops.stop_gradient(codes)))
        latent_loss = self.commitment_cost * commitment
        if not self.use_ema:
            latent_loss += ops.mean(ops.square(ops.stop_gradient(latents) - codes))

        if self.rotation_trick:
            quantized = rotate_to(latents, ops.stop_gradient(codes))
        else:
            quantized = latents + ops.stop_gradient(codes - latents)
        return quantized, tokens, self.latent_loss_weight * latent_loss

    def tokens_of(self, latents):
        flat_tokens = self._nearest_codes(
            ops.reshape(latents, (-1, self.embedding_dim))
        )
        return ops.reshape(flat_tokens, ops.shape(latents)[:-1])

    def codes_of(self, tokens):
        return ops.take(self._codes(), tokens, axis=0)

    def _codes(self):
        """The float32 codes as the search sees them (normalized for cosine
        similarity; the EMA statistics keep the unnormalized means)."""
        codebook = ops.convert_to_tensor(self.codebook)
        return _l2_normalize(codebook) if self.use_cosine_sim else codebook

    def _nearest_codes(self, flat):
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2: one matmul instead of an
        # (N, K, D) tensor. |z|^2 is the same for every code of a row, so the
        # argmin leaves it out.
        codebook = self._codes()
        squared_norms = ops.sum(ops.square(codebook), axis=1)[None, :]
        transposed = ops.transpose(codebook)

        def nearest(rows):
            # -distances, exactly: IEEE subtraction is symmetric in sign.
            scores = 2.0 * ops.matmul(rows, transposed) - squared_norms
            return first_maximum(scores)

        return map_row_blocks(nearest, ops.stop_gradient(flat), self.search_block_rows)

    @property
    def search_block_rows(self):
        """Rows whose distances to every code the search holds at once."""
        return max(1, SEARCH_BLOCK_ELEMENTS // self.num_embeddings)

    def _update_codebook(self, flat, flat_tokens):
        # Under tf.distribute each replica sees its slice of the batch. The
        # state variables average what the replicas assign
        # (aggregation="mean"), so assigning `replicas * local statistics`
        # yields the global batch's statistics, identical on every replica.
        replicas = distribution.num_replicas()
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
                distribution.is_first_replica(), replicas * restart_sum, 0.0
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

    def initialize_codes(self, latents, num_iterations=20, seed=None, verbose=0):
        if len(latents) < self.num_embeddings:
            raise ValueError(
                f"KMeansInit needs at least {self.num_embeddings} encoder "
                f"outputs (one per code); argument `data` gave {len(latents)} "
                "(the `latents` here)."
            )
        centroids = kmeans(
            latents,
            self.num_embeddings,
            num_iterations=num_iterations,
            seed=seed,
            verbose=verbose,
        )
        self.set_codebook(centroids)
        return centroids

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
                "use_cosine_sim": self.use_cosine_sim,
                "rotation_trick": self.rotation_trick,
                "codebook_initializer": keras.initializers.serialize(
                    self.codebook_initializer
                ),
            }
        )
        return config


def map_row_blocks(function, rows, block_rows):
    """`function(rows)` computed on blocks of at most `block_rows` rows.

    `function` maps `(n, D)` rows to `(n,)` values, row by row. One call when
    the number of rows is known and fits in a block; otherwise the rows are
    zero-padded to whole blocks, mapped block after block (`ops.map`) and the
    padding's values dropped.
    """
    count = rows.shape[0]
    if count is not None and count <= block_rows:
        return function(rows)
    count = ops.shape(rows)[0]
    padding = (-count) % block_rows
    padded = ops.pad(rows, [[0, padding], [0, 0]])
    blocks = ops.reshape(padded, (-1, block_rows, ops.shape(rows)[1]))
    return ops.reshape(ops.map(function, blocks), (-1,))[:count]


def rotate_to(vectors, targets, epsilon=1e-6):
    """`sg(lambda R) vectors` of the rotation trick, row by row over the last
    axis: the value is `targets` (up to rounding), the gradient with respect
    to `vectors` is `lambda R^T` times the incoming one.

    `R = I - 2 r r^T + 2 t u^T` with `u`, `t` the unit directions of a vector
    and its target and `r = (u + t) / |u + t|` takes `u` to `t`; `lambda =
    |target| / |vector|`. Applied as vector products, never as a matrix.
    `targets` must not carry gradients (pass `stop_gradient(codes)`).
    """
    vector_norm = ops.sqrt(ops.sum(ops.square(vectors), axis=-1, keepdims=True))
    target_norm = ops.sqrt(ops.sum(ops.square(targets), axis=-1, keepdims=True))
    u = ops.stop_gradient(vectors / (vector_norm + epsilon))
    t = targets / (target_norm + epsilon)
    # For a target opposite its vector (u + t ~ 0) any half-turn works; r = 0
    # makes R the reflection I + 2 t u^T, which also maps u to t = -u.
    sum_norm = ops.sqrt(ops.sum(ops.square(u + t), axis=-1, keepdims=True))
    r = ops.where(sum_norm > 1e-4, (u + t) / ops.maximum(sum_norm, 1e-4), 0.0)
    scale = ops.stop_gradient(target_norm / (vector_norm + epsilon))
    along_r = ops.sum(r * vectors, axis=-1, keepdims=True)
    along_u = ops.sum(u * vectors, axis=-1, keepdims=True)
    return scale * (vectors - 2.0 * along_r * r + 2.0 * along_u * t)


def _l2_normalize(x, epsilon=1e-6):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + epsilon**2)
