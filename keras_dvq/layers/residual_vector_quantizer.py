import keras
import numpy as np
from keras import ops

from keras_dvq.layers.quantizer import Quantizer
from keras_dvq.layers.quantizer import check_codebook_size
from keras_dvq.layers.vector_quantizer import VectorQuantizer
from keras_dvq.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_dvq")
class ResidualVectorQuantizer(Quantizer):
    """Residual vector quantization: stages of `VectorQuantizer` that each
    quantize what the previous ones left.

    Projects encoder features to `embedding_dim` numbers `z`; stage 1
    quantizes `r_1 = z`, stage `s + 1` quantizes the residual `r_{s+1} = r_s -
    e_s` of its predecessor, and the quantized latent is the sum of the
    stages' codes, with one straight-through gradient `z + sg(sum_s e_s -
    z)`. Each position gets `num_quantizers` token ids, coarse to fine, so
    the token grids are `(..., num_quantizers)` and `K ** num_quantizers`
    sums are reachable with `num_quantizers * K` codes.

    Every stage is a `VectorQuantizer` without projection, with its own
    codebook, moving averages, dead-code restarts and latent loss; the
    latent loss is the sum of the stages'. `KMeansInit` initializes the
    stages one after the other, each on the residuals the previous ones
    leave. With `quantizer_dropout > 0`, a training example is, with that
    probability, decoded from only its first `n` stages, `n` uniform in
    `[1, num_quantizers]` (SoundStream's quantizer dropout, for decoders that
    must also work at lower rates); every stage still trains on its
    residuals.

    Args:
        num_quantizers: int. Number of stages. Defaults to `4`.
        num_embeddings: int. Codes per stage. Defaults to `512`.
        embedding_dim: int. Size of the codes. Defaults to `64`.
        quantizer_dropout: float in [0, 1). Probability that a training
            example uses a random prefix of the stages. Defaults to `0.0`.
        commitment_cost, latent_loss_weight, use_ema, ema_decay, ema_epsilon,
            dead_code_threshold, codebook_initializer: the arguments of every
            stage's `VectorQuantizer`, with its defaults.
        use_projection: bool. Whether a 1x1 (dense) layer maps the inputs to
            `embedding_dim` numbers. Defaults to `True`.
        seed: int or `None`. Seed of the stages' restarts (stage `s` gets
            `seed + s`) and of the quantizer dropout.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `(..., features)`, typically `(N, h, w, F)`.
        training: bool. Whether moving averages, restarts and the quantizer
            dropout apply.

    Returns:
        A tuple `(quantized, tokens)`: `quantized` of shape
        `(..., embedding_dim)` in the compute dtype and int32 token ids of
        shape `(..., num_quantizers)` in `[0, num_embeddings)`.

    Example:

    ```python
    quantizer = ResidualVectorQuantizer(
        num_quantizers=4, num_embeddings=16, embedding_dim=4, use_ema=True
    )
    features = keras.random.normal((2, 8, 8, 32))
    quantized, tokens = quantizer(features, training=True)  # (2, 8, 8, 4), (2, 8, 8, 4)
    coarse = quantizer.lookup(tokens[..., :1])  # the first stage's codes only
    ```

    Reference:
        - [Zeghidour et al., 2021](https://arxiv.org/abs/2107.03312)
          (SoundStream), sec. 3.3, algorithm 1 and quantizer dropout.
    """

    def __init__(
        self,
        num_quantizers=4,
        num_embeddings=512,
        embedding_dim=64,
        quantizer_dropout=0.0,
        commitment_cost=0.25,
        latent_loss_weight=10.0,
        use_ema=False,
        ema_decay=0.99,
        ema_epsilon=1e-5,
        dead_code_threshold=0.0,
        codebook_initializer=None,
        use_projection=True,
        seed=None,
        **kwargs,
    ):
        num_quantizers = check_positive_int("num_quantizers", num_quantizers)
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
        self.num_quantizers = num_quantizers
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if not 0.0 <= quantizer_dropout < 1.0:
            raise ValueError(
                "Argument `quantizer_dropout` must be in [0, 1). Received: "
                f"quantizer_dropout={quantizer_dropout!r}"
            )
        self.quantizer_dropout = float(quantizer_dropout)
        self.token_shape = (self.num_quantizers,)
        self.stage_options = {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": embedding_dim,
            "commitment_cost": commitment_cost,
            "latent_loss_weight": latent_loss_weight,
            "use_ema": use_ema,
            "ema_decay": ema_decay,
            "ema_epsilon": ema_epsilon,
            "dead_code_threshold": dead_code_threshold,
            "codebook_initializer": codebook_initializer,
        }
        self.stages = [
            VectorQuantizer(
                use_projection=False,
                seed=None if seed is None else seed + index,
                dtype=self.dtype_policy,
                name=f"stage_{index}",
                **self.stage_options,
            )
            for index in range(self.num_quantizers)
        ]

    initializable_codes = True

    def build(self, input_shape):
        super().build(input_shape)
        latent_shape = tuple(input_shape[:-1]) + (self.embedding_dim,)
        for stage in self.stages:
            stage.build(latent_shape)

    def quantize_latents(self, latents, training=False):
        kept = self._stages_kept(latents) if training else None
        residual = latents
        total = ops.zeros_like(latents)
        tokens, latent_loss = [], ops.zeros((), "float32")
        for index, stage in enumerate(self.stages):
            _, stage_tokens, stage_loss = stage.quantize_latents(residual, training)
            codes = ops.stop_gradient(stage.codes_of(stage_tokens))
            if kept is None:
                total = total + codes
            else:
                total = total + ops.where(index < kept, codes, 0.0)
            # The residuals carry the encoder's gradient: every stage's
            # commitment term pulls z towards the sum of the codes so far.
            residual = residual - codes
            tokens.append(stage_tokens)
            latent_loss = latent_loss + stage_loss
        quantized = latents + ops.stop_gradient(total - latents)
        return quantized, ops.stack(tokens, axis=-1), latent_loss

    def _stages_kept(self, latents):
        """Per example, how many stages its quantized latent sums, shaped to
        broadcast against `latents`; `None` without quantizer dropout."""
        if self.quantizer_dropout == 0:
            return None
        batch = ops.shape(latents)[:1]
        drop = keras.random.uniform(batch, seed=self.seed_generator)
        prefix = keras.random.randint(
            batch, 1, self.num_quantizers + 1, seed=self.seed_generator
        )
        kept = ops.where(drop < self.quantizer_dropout, prefix, self.num_quantizers)
        return ops.reshape(kept, (-1,) + (1,) * (len(latents.shape) - 1))

    def tokens_of(self, latents):
        residual, tokens = latents, []
        for stage in self.stages:
            stage_tokens = stage.tokens_of(residual)
            residual = residual - stage.codes_of(stage_tokens)
            tokens.append(stage_tokens)
        return ops.stack(tokens, axis=-1)

    def codes_of(self, tokens):
        """The sum of the stages' codes; `tokens` may hold only the first
        stages (`(..., s)`, `s <= num_quantizers`), for a coarser latent."""
        total = None
        for index in range(tokens.shape[-1]):
            codes = self.stages[index].codes_of(tokens[..., index])
            total = codes if total is None else total + codes
        return total

    def initialize_codes(self, latents, num_iterations=20, seed=None, verbose=0):
        residual = np.asarray(latents, dtype="float32")
        centroids = []
        for index, stage in enumerate(self.stages):
            stage_seed = None if seed is None else seed + index
            centroids.append(
                stage.initialize_codes(residual, num_iterations, stage_seed, verbose)
            )
            tokens = stage.tokens_of(ops.convert_to_tensor(residual))
            residual = residual - ops.convert_to_numpy(stage.codes_of(tokens))
        return np.stack(centroids)

    def get_config(self):
        config = super().get_config()
        options = dict(self.stage_options)
        options["codebook_initializer"] = keras.initializers.serialize(
            self.stages[0].codebook_initializer
        )
        config.update(
            {
                "num_quantizers": self.num_quantizers,
                "quantizer_dropout": self.quantizer_dropout,
                **options,
            }
        )
        return config
