import math

import keras
from keras import ops

from keras_dvq import distribution
from keras_dvq.layers.quantizer import Quantizer
from keras_dvq.layers.quantizer import check_codebook_size
from keras_dvq.layers.quantizer import first_maximum
from keras_dvq.layers.quantizer import get_codebook_initializer
from keras_dvq.ops.code_statistics import code_counts
from keras_dvq.ops.code_statistics import entropy
from keras_dvq.utils.validation import check_non_negative
from keras_dvq.utils.validation import check_positive


@keras.saving.register_keras_serializable(package="keras_dvq")
class GumbelQuantizer(Quantizer):
    """Gumbel-softmax quantizer: a relaxed categorical choice of a code.

    A 1x1 (dense) layer maps encoder features to `num_embeddings` logits.
    During training, `y = softmax((logits + g) / temperature)` with Gumbel
    noise `g` mixes the codebook, `z_q = y @ codebook`; with
    `straight_through=True` the forward pass uses the one-hot of `argmax(y)`
    while gradients flow through `y`. At inference the token is the argmax of
    the logits (no noise) and `z_q` its code. The latent loss, added with
    `add_loss`, is

        kl_weight * mean_n KL(q_n || uniform)
        + diversity_weight * KL(mean_n q_n || uniform),

    with `q_n = softmax(logits_n)` at position `n`. The first term (DALL-E's)
    flattens every position's distribution; the second (the diversity term
    of wav2vec 2.0, the batch entropy of LFQ) flattens only the batch's
    average use of the codes, so positions may stay confident while the batch
    spreads over the codebook. Under a `tf.distribute` strategy the average
    is the global batch's (an all-reduce, as `VectorQuantizer`'s EMA
    statistics), so two replicas take the single-device step.

    The tokenizer emits argmax codes, on which a decoder trained on soft
    mixtures reconstructs worse (docs/gumbel_tuning.md). While the variable
    `argmax_codes` is 1, training quantizes as inference does (the argmax
    code, no noise) and passes no gradient back: the codes stop gradients and
    the latent loss is 0, so only the decoder learns. `ArgmaxCodesPhase` sets
    it for the last steps of a run; a model saved in that phase keeps it
    (assign 0 to train it further end to end).

    With `balance_rate > 0`, the logits get a non-trainable per-code offset
    that a controller, not the gradient, sets (the auxiliary-loss-free load
    balancing of DeepSeek-V3's mixture-of-experts router): after every
    training step, the offset of each code that won fewer than `1 / K` of the
    batch's argmax choices rises by `balance_rate`, that of each code that
    won more falls by as much. A code no position picks, whose gradient is
    all but zero, thus climbs until it wins somewhere; the offset is part of
    the logits everywhere (sampling, argmax tokens, both KL terms), so the
    tokenizer emits the codes it was balanced on. Like the diversity term,
    the batch's counts are the global batch's under `tf.distribute`; the
    offset does not move during the `argmax_codes` phase.

    `temperature`, `kl_weight`, `diversity_weight` and `argmax_codes` live in
    non-trainable variables, which a compiled training step reads afresh
    (a Python float would be frozen into it). The temperature and the KL
    weight may follow schedules of the training step (`temperature_schedule`,
    `kl_weight_schedule`, e.g. `keras_dvq.schedules.CosineAnnealing`), which
    the compiled step evaluates itself: at the quantizer's `iterations`, a
    non-trainable count of its training calls that it advances after each,
    saved and restored with the model, so a resumed run continues its
    schedules exactly. The variables then hold the value that the last
    training step used (what evaluation reads). `TemperatureAnnealing` and
    `KLWeightRamp` set these schedules at the start of `fit` and align
    `iterations` with the optimizer's; `ArgmaxCodesPhase` sets `argmax_codes`
    when its phase begins. Logits, the softmax and both KL terms run in
    float32 under any dtype policy.

    Args:
        num_embeddings: int. Number of codes `K`. Defaults to `512`.
        embedding_dim: int. Size `D` of each code. Defaults to `64`.
        temperature: float. Initial Gumbel-softmax temperature. Defaults to
            `0.5`, the temperature that the tuned recipe
            (docs/gumbel_tuning.md) holds for nine tenths of the run; the original
            repo starts at `1.0`.
        kl_weight: float. Initial weight of the KL to the uniform prior.
            Defaults to `1.5e-5`, the tuned recipe's; the original repo uses
            `5e-4`.
        diversity_weight: float. Weight of the KL of the batch-averaged code
            distribution to the uniform one. Defaults to `0.0` (off);
            `scripts/train.py`'s gumbel recipe uses `0.03`, which keeps the
            codebook in use (docs/gumbel_tuning.md).
        balance_rate: float. Step of the per-code logit offset that evens
            out the codes' use (see above). Defaults to `0.0` (off; the
            offset stays 0).
        straight_through: bool. Hard one-hot forward pass with the soft
            gradient. Defaults to `False` (soft relaxation, as the original and
            the tuned recipe).
        temperature_schedule: `None` (the `temperature` variable holds still)
            or a serializable callable from the step (an int tensor) to the
            temperature, such as `CosineAnnealing(1.0, 1 / 16, 150_000)`.
            Defaults to `None`.
        kl_weight_schedule: `None` or a schedule of the KL weight, as
            `temperature_schedule`. Defaults to `None`.
        codebook_initializer: initializer of the codebook. Defaults to a unit
            normal, as PyTorch's `nn.Embedding`.
        seed: int or `None`. Seed of the Gumbel noise.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: float tensor `(..., features)`, typically `(N, h, w, F)`.
        training: bool. Sample with Gumbel noise if `True`.

    Returns:
        A tuple `(quantized, tokens)`: `quantized` of shape
        `(..., embedding_dim)` in the layer's compute dtype and int32 token
        ids of shape `(...)`.

    Example:

    ```python
    from keras_dvq.schedules import CosineAnnealing

    quantizer = GumbelQuantizer(num_embeddings=16, embedding_dim=4, seed=0)
    features = keras.random.normal((2, 8, 8, 32))
    quantized, tokens = quantizer(features, training=True)  # (2, 8, 8, 4), (2, 8, 8)
    # The DALL-E anneal, evaluated inside the compiled training step.
    annealed = GumbelQuantizer(
        temperature_schedule=CosineAnnealing(1.0, 1.0 / 16, 150_000)
    )
    ```

    Reference:
        - [Jang et al., 2016](https://arxiv.org/abs/1611.01144)
        - [Ramesh et al., 2021](https://arxiv.org/abs/2102.12092), sec. 2.1.
        - [DeepSeek-AI, 2024](https://arxiv.org/abs/2412.19437), sec. 2.1.2
          (the balancing offset).
    """

    def __init__(
        self,
        num_embeddings=512,
        embedding_dim=64,
        temperature=0.5,
        kl_weight=1.5e-5,
        diversity_weight=0.0,
        balance_rate=0.0,
        straight_through=False,
        temperature_schedule=None,
        kl_weight_schedule=None,
        codebook_initializer=None,
        seed=None,
        **kwargs,
    ):
        num_embeddings, embedding_dim = check_codebook_size(
            num_embeddings, embedding_dim
        )
        # Logits stay float32: a bfloat16 softmax over K codes is too coarse.
        super().__init__(
            latent_dim=num_embeddings,
            vocabulary_size=num_embeddings,
            quantized_dim=embedding_dim,
            projection_dtype="float32",
            seed=seed,
            **kwargs,
        )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.initial_temperature = check_positive("temperature", temperature)
        self.initial_kl_weight = check_non_negative("kl_weight", kl_weight)
        self.initial_diversity_weight = check_non_negative(
            "diversity_weight", diversity_weight
        )
        self.balance_rate = check_non_negative("balance_rate", balance_rate)
        self.straight_through = bool(straight_through)
        self.temperature_schedule = _schedule(
            "temperature_schedule", temperature_schedule
        )
        self.kl_weight_schedule = _schedule("kl_weight_schedule", kl_weight_schedule)
        self.codebook_initializer = get_codebook_initializer(codebook_initializer)
        # Created here, not in build(): callbacks set them before the first
        # step, which is when some trainers build the model.
        self.temperature = self._scalar("temperature", self.initial_temperature)
        self.kl_weight = self._scalar("kl_weight", self.initial_kl_weight)
        self.diversity_weight = self._scalar(
            "diversity_weight", self.initial_diversity_weight
        )
        self.argmax_codes = self._scalar("argmax_codes", 0.0)
        self.logit_offset = self.add_weight(
            name="logit_offset",
            shape=(num_embeddings,),
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="mean",
        )
        # The step the schedules read, counted in the graph: on JAX the
        # forward pass does not see the optimizer's `iterations`. Last, so
        # that older files lack only trailing variables.
        self.iterations = self.add_weight(
            name="iterations",
            shape=(),
            dtype="int",
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.codebook = self.add_codebook(
            (self.num_embeddings, self.embedding_dim), self.codebook_initializer
        )

    def _scalar(self, name, value):
        return self.add_weight(
            name=name,
            shape=(),
            initializer=keras.initializers.Constant(value),
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    def quantize_latents(self, logits, training=False):
        temperature, kl_weight = self.temperature, self.kl_weight
        if training:
            temperature, kl_weight = self._scheduled_values()
        logits = self._offset(logits)
        log_q = ops.log_softmax(logits, axis=-1)
        log_k = math.log(self.num_embeddings)
        q = ops.exp(log_q)
        kl = ops.sum(q * (log_q + log_k), axis=-1)
        average_q = distribution.replica_mean(
            ops.mean(ops.reshape(q, (-1, self.num_embeddings)), axis=0)
        )
        average_kl = log_k - entropy(average_q)
        latent_loss = kl_weight * ops.mean(kl) + self.diversity_weight * average_kl

        argmax_tokens = first_maximum(logits)
        if not training:
            return self.codes_of(argmax_tokens), argmax_tokens, latent_loss
        soft, tokens = self._relaxed_codes(logits, temperature)
        # A blend, not a branch: one compiled step serves both phases.
        hard = self.argmax_codes
        if self.balance_rate > 0:
            self._balance(argmax_tokens, frozen=hard)
        quantized = (1.0 - hard) * soft + hard * ops.stop_gradient(
            self.codes_of(argmax_tokens)
        )
        tokens = ops.where(hard > 0.5, argmax_tokens, tokens)
        return quantized, tokens, (1.0 - hard) * latent_loss

    def _scheduled_values(self):
        """The temperature and KL weight of this training step: the
        schedules at the current step, kept in their variables; then the
        step count advances."""
        step = ops.convert_to_tensor(self.iterations)
        values = []
        for variable, schedule in (
            (self.temperature, self.temperature_schedule),
            (self.kl_weight, self.kl_weight_schedule),
        ):
            if schedule is None:
                values.append(variable)
                continue
            value = ops.cast(schedule(step), "float32")
            variable.assign(value)
            values.append(value)
        self.iterations.assign_add(ops.ones((), self.iterations.dtype))
        return values

    def _offset(self, logits):
        return logits + self.logit_offset

    def _balance(self, tokens, frozen):
        """Moves the offset of every code toward an even share of the
        batch's argmax choices (none while `frozen` is 1)."""
        counts = code_counts(tokens, self.num_embeddings)
        share = distribution.replica_mean(counts / ops.sum(counts))
        step = ops.sign(1.0 / self.num_embeddings - share)
        # Logits are shift-invariant: a centred step keeps the offset bounded.
        step = self.balance_rate * (1.0 - frozen) * (step - ops.mean(step))
        self.logit_offset.assign(self.logit_offset + step)

    def _relaxed_codes(self, logits, temperature):
        """The Gumbel-softmax mixture of codes and the sampled tokens."""
        uniform = keras.random.uniform(
            ops.shape(logits), minval=1e-9, maxval=1.0, seed=self.seed_generator
        )
        gumbel = -ops.log(-ops.log(uniform))
        weights = ops.softmax((logits + gumbel) / temperature, axis=-1)
        tokens = first_maximum(weights)
        if self.straight_through:
            # A comparison, not ops.one_hot: PyTorch's one_hot reads the ids
            # back to the host (a sync per training step on a GPU).
            codes = ops.arange(self.num_embeddings, dtype="int32")
            hard = ops.cast(ops.equal(tokens[..., None], codes), "float32")
            weights = weights + ops.stop_gradient(hard - weights)
        return ops.matmul(weights, self.codebook), tokens

    def load_own_variables(self, store):
        # Files saved before `diversity_weight`, `argmax_codes`,
        # `logit_offset` or `iterations` existed lack the last one to four
        # variables: those keep their initial values.
        own = self._trainable_variables + self._non_trainable_variables
        missing = len(own) - len(store.keys())
        added_later = [
            self.diversity_weight,
            self.argmax_codes,
            self.logit_offset,
            self.iterations,
        ]
        if 0 < missing <= len(added_later) and all(
            a is b for a, b in zip(own[-missing:], added_later[-missing:], strict=True)
        ):
            for index, variable in enumerate(own[:-missing]):
                variable.assign(store[f"{index}"])
            return
        super().load_own_variables(store)

    def tokens_of(self, logits):
        # The argmax of the logits: the mode of the code distribution.
        return first_maximum(self._offset(logits))

    def codes_of(self, tokens):
        return ops.take(self.codebook, tokens, axis=0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim,
                "temperature": self.initial_temperature,
                "kl_weight": self.initial_kl_weight,
                "diversity_weight": self.initial_diversity_weight,
                "balance_rate": self.balance_rate,
                "straight_through": self.straight_through,
                "temperature_schedule": _serialize(self.temperature_schedule),
                "kl_weight_schedule": _serialize(self.kl_weight_schedule),
                "codebook_initializer": keras.initializers.serialize(
                    self.codebook_initializer
                ),
            }
        )
        return config


def _schedule(name, schedule):
    """A schedule argument: `None`, a callable of the step, or the config
    of a serializable one (as `get_config` writes it)."""
    if isinstance(schedule, dict):
        schedule = keras.saving.deserialize_keras_object(schedule)
    if schedule is not None and not callable(schedule):
        raise ValueError(
            f"Argument `{name}` must be `None` or a callable of the training "
            "step, such as `keras_dvq.schedules.CosineAnnealing(...)`. "
            f"Received: {name}={schedule!r}"
        )
    return schedule


def _serialize(schedule):
    return None if schedule is None else keras.saving.serialize_keras_object(schedule)
