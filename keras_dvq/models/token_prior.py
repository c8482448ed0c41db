"""`TokenPrior`: a decoder-only (causal) transformer over token grids."""

import math

import keras
import numpy as np
from keras import ops

from keras_dvq.utils.validation import check_positive_int

LEARNING_RATE = 1e-3


def _keras_hub():
    # Imported lazily: keras-hub pulls in TensorFlow text utilities that the
    # tokenizer side of the package never needs.
    import keras_hub

    return keras_hub


@keras.saving.register_keras_serializable(package="keras_dvq")
class TokenPrior(keras.Model):
    """A causal transformer that models token grids, one token at a time.

    A grid of `token_shape` (`(h, w)`, or `(h, w, depth)` for tokens with
    several ids per position) is flattened in row-major order (row, then
    column, then depth) into a sequence of `h * w * depth` ids. Slot `i` of
    the transformer's input holds the previous id (slot 0: a start token,
    which is the class token when the prior is class-conditional) plus the
    row, column and depth embeddings of token `i`, the one it predicts, so
    every slot knows where on the 2-D grid it is. keras-hub's
    `TransformerDecoder` blocks (pre-layer-norm, causal mask) follow; the
    output at slot `i` is the logits of token `i` given the class and the
    tokens before it.

    Train with plain `fit` on every backend: `fit(grids)` or, for a
    class-conditional prior, `fit({"tokens": grids, "class_ids": labels})`;
    the loss is the mean cross-entropy in nats per token (divide by ln 2 for
    bits). `generate` samples new grids with keras-hub's samplers and cached
    decoding (each step feeds one slot and reuses the attention keys and
    values of the earlier slots).

    Args:
        vocabulary_size: int. Ids are in `[0, vocabulary_size)`.
        token_shape: tuple of ints, `(h, w)` or `(h, w, depth)`.
        num_classes: int. `0`: unconditional; `C > 0`: conditioned on a class
            id in `[0, C)`.
        hidden_dim: int. Width of embeddings and transformer.
        num_layers: int. Transformer blocks.
        num_heads: int. Attention heads; must divide `hidden_dim`.
        intermediate_dim: int. Feedforward width; `None`: `4 * hidden_dim`.
        dropout: float in [0, 1). Dropout of attention and feedforward.
        **kwargs: base `keras.Model` arguments (`name`, `dtype`).

    Call arguments:
        inputs: int grids `(B, *token_shape)`, or a dict with `"tokens"` (the
            grids) and `"class_ids"` (`(B,)`) for a class-conditional prior.
        training: bool. Dropout on or off.

    Returns the logits `(B, *token_shape, vocabulary_size)`: at each position,
    the prediction of that token from the class and the tokens before it in
    row-major order.

    Example:

    ```python
    grids = np.random.randint(0, 512, size=(256, 8, 8))
    prior = TokenPrior(vocabulary_size=512, token_shape=(8, 8), num_classes=8)
    prior.compile()  # AdamW(1e-3), cross-entropy of the next token
    prior.fit({"tokens": grids, "class_ids": labels}, batch_size=32, epochs=1)
    samples = prior.generate(4, class_id=3, temperature=1.0, top_k=50, seed=0)
    # int32 (4, 8, 8), the same for the same seed
    ```

    Reference:
        - [Esser et al., 2021](https://arxiv.org/abs/2012.09841) (VQGAN:
          a causal transformer over row-major token sequences)
        - [van den Oord et al., 2017](https://arxiv.org/abs/1711.00937)
          (VQ-VAE: a prior over the latent grid)
    """

    def __init__(
        self,
        vocabulary_size=512,
        token_shape=(8, 8),
        num_classes=0,
        hidden_dim=128,
        num_layers=4,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("vocabulary_size", vocabulary_size)
        token_shape = tuple(token_shape)
        if len(token_shape) not in (2, 3) or not all(
            isinstance(size, (int, np.integer)) and size > 0 for size in token_shape
        ):
            raise ValueError(
                "Argument `token_shape` must be (h, w) or (h, w, depth) of "
                f"positive ints. Received: token_shape={token_shape!r}"
            )
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, (int, np.integer))
            or num_classes < 0
        ):
            raise ValueError(
                "Argument `num_classes` must be an int >= 0 (0: unconditional). "
                f"Received: num_classes={num_classes!r}"
            )
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_heads", num_heads)
        if hidden_dim % num_heads:
            raise ValueError(
                "Argument `num_heads` must divide `hidden_dim`. Received: "
                f"num_heads={num_heads}, hidden_dim={hidden_dim}"
            )
        if intermediate_dim is not None:
            check_positive_int("intermediate_dim", intermediate_dim)
        if not 0 <= dropout < 1:
            raise ValueError(
                f"Argument `dropout` must be in [0, 1). Received: dropout={dropout}"
            )
        self.vocabulary_size = int(vocabulary_size)
        self.token_shape = tuple(int(size) for size in token_shape)
        self.num_classes = int(num_classes)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.sequence_length = math.prod(self.token_shape)

        hub = _keras_hub()
        grid = self.token_shape + (1,) * (3 - len(self.token_shape))
        # The (row, column, depth) of each token in row-major order.
        self._coordinates = np.indices(grid).reshape(3, -1).T.astype("int32")
        sequence_shape = (None, self.sequence_length, hidden_dim)
        self.token_embedding = hub.layers.ReversibleEmbedding(
            self.vocabulary_size,
            hidden_dim,
            tie_weights=False,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="token_embedding",
        )
        # One start token per class (one in all for an unconditional prior).
        self.start_embedding = keras.layers.Embedding(
            max(1, self.num_classes), hidden_dim, name="start_embedding"
        )
        self.position_embeddings = [
            keras.layers.Embedding(size, hidden_dim, name=f"{axis}_embedding")
            for axis, size in zip(("row", "column", "depth"), grid, strict=True)
        ]
        self.embeddings_dropout = keras.layers.Dropout(dropout)
        self.transformer_layers = [
            hub.layers.TransformerDecoder(
                intermediate_dim=intermediate_dim or 4 * hidden_dim,
                num_heads=num_heads,
                dropout=dropout,
                activation="gelu",
                normalize_first=True,
                name=f"transformer_layer_{index}",
            )
            for index in range(num_layers)
        ]
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="layer_norm"
        )
        # Everything is built here, from the known sequence length, so that a
        # loaded prior has its weights before any call.
        self.token_embedding.build((None, None))
        self.start_embedding.build((None, None))
        for embedding in self.position_embeddings:
            embedding.build((None, None))
        for layer in self.transformer_layers:
            layer.build(sequence_shape)
        self.layer_norm.build(sequence_shape)
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "token_shape": self.token_shape,
                "num_classes": self.num_classes,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["token_shape"] = tuple(config["token_shape"])
        return cls(**config)

    def compile(self, optimizer=None, loss=None, **kwargs):
        """Configures training; without arguments, AdamW(1e-3).

        The next-token cross-entropy is part of the model, so `loss` must
        stay `None`.
        """
        if loss is not None:
            raise ValueError(
                "TokenPrior computes its own next-token cross-entropy. "
                f"Received: loss={loss!r}"
            )
        if optimizer is None:
            optimizer = keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.01)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips overridden `compile` methods when loading; ours is safe
        # to replay, and replaying it restores the optimizer and its state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            tokens = inputs["tokens"]
            class_ids = inputs.get("class_ids")
        else:
            tokens, class_ids = inputs, None
        if self.num_classes and class_ids is None:
            raise ValueError(
                f"This TokenPrior is conditioned on {self.num_classes} classes: "
                'call it with {"tokens": grids, "class_ids": labels}.'
            )
        if not self.num_classes:  # one start token for all
            class_ids = ops.zeros((ops.shape(tokens)[0],), "int32")
        return tokens, class_ids

    def _flatten(self, tokens):
        tokens = ops.cast(tokens, "int32")
        return ops.reshape(tokens, (-1, self.sequence_length))

    def _slot_embeddings(self, previous, slots, class_ids):
        """Embeddings of input slots: `previous` ids `(B, S)` at slot indices
        `slots` `(S,)` (slot 0 takes the start token of `class_ids`)."""
        coordinates = ops.take(ops.convert_to_tensor(self._coordinates), slots, axis=0)
        start = self.start_embedding(ops.cast(class_ids, "int32")[:, None])
        previous = ops.clip(previous, 0, self.vocabulary_size - 1)
        tokens = self.token_embedding(previous)
        x = ops.where((slots == 0)[None, :, None], start, tokens)
        for axis, embedding in enumerate(self.position_embeddings):
            x = x + embedding(coordinates[:, axis])[None]
        return x

    def _transform(self, x, training=None):
        x = self.embeddings_dropout(x, training=training)
        for layer in self.transformer_layers:
            x = layer(x, training=training)
        x = self.layer_norm(x)
        return self.token_embedding(x, reverse=True)

    def call(self, inputs, training=None):
        tokens, class_ids = self._split_inputs(inputs)
        sequence = self._flatten(tokens)
        # Slot i sees token i - 1 (slot 0: the start token).
        previous = ops.pad(sequence[:, :-1], [[0, 0], [1, 0]])
        slots = ops.arange(self.sequence_length, dtype="int32")
        x = self._slot_embeddings(previous, slots, class_ids)
        logits = self._transform(x, training=training)
        return ops.reshape(logits, (-1, *self.token_shape, self.vocabulary_size))

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        tokens, _ = self._split_inputs(x)
        targets = self._flatten(tokens)
        logits = ops.reshape(y_pred, (-1, self.sequence_length, self.vocabulary_size))
        nll = keras.losses.sparse_categorical_crossentropy(
            targets, ops.cast(logits, "float32"), from_logits=True
        )
        return ops.mean(nll)

    def _call_with_cache(self, previous, class_ids, cache, index):
        """Logits of slot `index` from its input id `previous` `(B, 1)`,
        reading and updating the key/value `cache` of every layer."""
        x = self._slot_embeddings(previous, ops.reshape(index, (1,)), class_ids)
        caches = []
        for number, layer in enumerate(self.transformer_layers):
            x, layer_cache = layer(
                x,
                self_attention_cache=cache[:, number, ...],
                self_attention_cache_update_index=index,
            )
            caches.append(layer_cache)
        logits = self.token_embedding(self.layer_norm(x), reverse=True)
        return logits[:, 0], ops.stack(caches, axis=1)

    def generate(
        self,
        num_samples,
        temperature=1.0,
        top_k=None,
        class_id=None,
        seed=None,
        greedy=False,
        use_cache=True,
    ):
        """Samples token grids.

        Args:
            num_samples: int. Grids to sample.
            temperature: float > 0. Softmax temperature of the logits.
            top_k: int or `None`. Sample among the `top_k` likeliest ids only.
            class_id: int in `[0, num_classes)` for a class-conditional prior
                (required there), `None` otherwise.
            seed: int or `None`. The same seed gives the same grids (on the
                same backend and machine).
            greedy: bool. Take the likeliest id at every step instead.
            use_cache: bool. Cached decoding (one slot per step, keys and
                values of earlier slots reused) or a full forward pass per
                step; both give the same tokens.

        Returns:
            int32 NumPy array `(num_samples, *token_shape)`.
        """
        check_positive_int("num_samples", num_samples)
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(
                "Argument `temperature` must be a number > 0. "
                f"Received: temperature={temperature!r}"
            )
        if top_k is not None:
            check_positive_int("top_k", top_k)
            top_k = min(top_k, self.vocabulary_size)
        if self.num_classes:
            if (
                not isinstance(class_id, (int, np.integer))
                or not 0 <= class_id < self.num_classes
            ):
                raise ValueError(
                    f"Argument `class_id` must be an int in [0, {self.num_classes}) "
                    f"for this class-conditional prior. Received: class_id={class_id!r}"
                )
        elif class_id is not None:
            raise ValueError(
                "Argument `class_id` must be None: this prior is unconditional. "
                f"Received: class_id={class_id!r}"
            )
        samplers = _keras_hub().samplers
        if greedy:
            sampler = samplers.GreedySampler(temperature=temperature)
        elif top_k is not None:
            sampler = samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
        else:
            sampler = samplers.RandomSampler(seed=seed, temperature=temperature)
        class_ids = ops.full((num_samples,), class_id or 0, dtype="int32")
        if keras.config.backend() == "torch":
            import torch

            with torch.no_grad():
                grids = self._generate(sampler, class_ids, num_samples, use_cache)
        else:
            grids = self._generate(sampler, class_ids, num_samples, use_cache)
        grids = ops.convert_to_numpy(grids).astype("int32")
        return grids.reshape((num_samples, *self.token_shape))

    def _generate(self, sampler, class_ids, num_samples, use_cache):
        # The sampler fills a prompt of `sequence_length + 1` ids from index 1:
        # prompt[:, 0] is the start slot's placeholder, prompt[:, i + 1] token i.
        prompt = ops.zeros((num_samples, self.sequence_length + 1), dtype="int32")
        if use_cache:
            head_dim = self.hidden_dim // self.num_heads
            cache = ops.zeros(
                (
                    num_samples,
                    self.num_layers,
                    2,
                    self.sequence_length,
                    self.num_heads,
                    head_dim,
                ),
                dtype=self.compute_dtype,
            )

            def next_logits(prompt, cache, index):
                slot = index - 1
                previous = ops.slice(prompt, [0, slot], [num_samples, 1])
                logits, cache = self._call_with_cache(previous, class_ids, cache, slot)
                return logits, None, cache

        else:
            cache = None

            def next_logits(prompt, cache, index):
                tokens = prompt[:, 1:]
                logits = self({"tokens": tokens, "class_ids": class_ids})
                logits = ops.reshape(
                    logits, (num_samples, self.sequence_length, self.vocabulary_size)
                )
                slot = index - 1
                logits = ops.slice(
                    logits, [0, slot, 0], [num_samples, 1, self.vocabulary_size]
                )
                return ops.squeeze(logits, axis=1), None, cache

        grids = sampler(
            next=next_logits, prompt=prompt, cache=cache, index=1, model=self
        )
        return grids[:, 1:]
