import inspect

import keras
import numpy as np
from keras import ops

from keras_dvq import distribution
from keras_dvq import losses
from keras_dvq.evaluation.measures import psnr
from keras_dvq.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from keras_dvq.layers.gumbel_quantizer import GumbelQuantizer
from keras_dvq.layers.lookup_free_quantizer import LookupFreeQuantizer
from keras_dvq.layers.residual_vector_quantizer import ResidualVectorQuantizer
from keras_dvq.layers.vector_quantizer import VectorQuantizer
from keras_dvq.metrics import CodebookUsage
from keras_dvq.models.dalle import DalleDecoder
from keras_dvq.models.dalle import DalleEncoder
from keras_dvq.models.deepmind import DeepMindDecoder
from keras_dvq.models.deepmind import DeepMindEncoder
from keras_dvq.utils.validation import check_choice
from keras_dvq.utils.validation import check_positive_int

ENCODER_DECODERS = {
    "deepmind": (DeepMindEncoder, DeepMindDecoder),
    "openai": (DalleEncoder, DalleDecoder),
}
QUANTIZERS = {
    "vqvae": VectorQuantizer,
    "gumbel": GumbelQuantizer,
    "fsq": FiniteScalarQuantizer,
    "lfq": LookupFreeQuantizer,
    "rvq": ResidualVectorQuantizer,
}
# What keeps the codebook healthy (docs/codebook.md: 500 of 512 codes
# used vs 118 for the original recipe): an EMA codebook whose codes are
# restarted from encoder outputs when used less than once per step on average.
# Use with KMeansInit, as scripts/train.py does.
HEALTHY_VQ_DEFAULTS = {"use_ema": True, "dead_code_threshold": 1.0}
# Quantizer arguments that `from_flavors` sets unless told otherwise.
FLAVOR_DEFAULTS = {"vqvae": HEALTHY_VQ_DEFAULTS, "rvq": HEALTHY_VQ_DEFAULTS}


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQVAE(keras.Model):
    """An autoencoder with a discrete bottleneck: encoder, quantizer, decoder.

    Images go through the reconstruction loss's in-map, the encoder, the
    quantizer (which adds its latent loss) and the decoder, whose output
    parametrizes the reconstruction likelihood. Training minimizes
    `recon_loss + latent_loss` with plain `fit()` on every backend; the logs
    also hold `perplexity` and `cluster_use`, computed from the code
    histogram of the whole epoch (or evaluation), and `psnr`, the mean
    per-image PSNR of the reconstructions in dB (in training, through the
    training-mode bottleneck).

    Inputs may be float images in [0, 1] or integer (uint8) images in
    [0, 255], as arrays or `tf.data` datasets of images, `(images, labels)`
    pairs or tfds dicts `{"image": ...}`; labels are ignored.

    Calling the model returns a dict: `"reconstruction"` (float32 images in
    [0, 1]), `"tokens"` (int32 `(N, H/stride, W/stride, *token_shape)` with
    the quantizer's `token_shape`, `()` but for residual stages),
    `"decoder_output"`
    (the likelihood parameters) and `"latent_loss"` (the quantizer's added
    loss, also in `model.losses`). `encode()` and `decode()` map
    images to token grids and back; `predict()` returns the reconstructions
    through the bottleneck, `decode(encode(x))`.

    Args:
        encoder: layer mapping `(N, H, W, C)` images to features; its `stride`
            attribute is the downsampling factor.
        quantizer: a `keras_dvq.layers.Quantizer` (`VectorQuantizer`,
            `GumbelQuantizer`, `FiniteScalarQuantizer`, `LookupFreeQuantizer`,
            `ResidualVectorQuantizer`).
        decoder: layer mapping quantized features back to
            `image_channels * params_per_channel` channels.
        reconstruction_loss: `"l2"`, `"logit_laplace"` or a loss instance from
            `keras_dvq.losses`. Defaults to `"l2"`.
        image_channels: int. Channels of the images. Defaults to `3`.
        **kwargs: base model keyword arguments, such as `name`.

    Example:

    ```python
    model = VQVAE.from_flavors(vq_flavor="vqvae", enc_dec_flavor="deepmind")
    model.compile()  # AdamW(3e-4, weight decay 1e-4)
    model.fit(images, batch_size=128, epochs=1)  # images: (N, 32, 32, 3)
    tokens = model.encode(images)  # int32 (N, 8, 8)
    reconstructions = model.decode(tokens)  # float32 (N, 32, 32, 3) in [0, 1]
    ```
    """

    def __init__(
        self,
        encoder,
        quantizer,
        decoder,
        reconstruction_loss="l2",
        image_channels=3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.reconstruction_loss = losses.get(reconstruction_loss)
        self.image_channels = check_positive_int("image_channels", image_channels)
        self.stride = getattr(encoder, "stride", None)
        expected = image_channels * self.reconstruction_loss.params_per_channel
        received = getattr(decoder, "output_channels", expected)
        if received != expected:
            raise ValueError(
                f"Argument `decoder` must emit {expected} channels for "
                f"{image_channels} image channels under "
                f"{type(self.reconstruction_loss).__name__}. "
                f"Received: decoder.output_channels={received}"
            )
        self.recon_tracker = keras.metrics.Mean(name="recon_loss")
        self.latent_tracker = keras.metrics.Mean(name="latent_loss")
        # Mean of per-image PSNRs of the reconstructions, in dB.
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.codebook_usage = CodebookUsage(quantizer.vocabulary_size)
        self._inference = _InferenceModels(self)

    @classmethod
    def from_flavors(
        cls,
        vq_flavor="vqvae",
        enc_dec_flavor="deepmind",
        loss_flavor="l2",
        num_embeddings=None,
        embedding_dim=None,
        n_hid=64,
        image_channels=3,
        seed_faithful=False,
        **quantizer_kwargs,
    ):
        """Builds a model from the original repo's flags and defaults.

        The `"vqvae"` and `"rvq"` quantizers default to EMA codebooks with
        dead-code restarts (`use_ema=True, dead_code_threshold=1.0`), which
        keep the codebook in use where the original recipe collapses; pass
        `seed_faithful=True` for the original's gradient-trained codebook.

        Args:
            vq_flavor: `"vqvae"` (`VectorQuantizer`, nearest code),
                `"gumbel"` (`GumbelQuantizer`), `"fsq"`
                (`FiniteScalarQuantizer`), `"lfq"` (`LookupFreeQuantizer`) or
                `"rvq"` (`ResidualVectorQuantizer`).
            enc_dec_flavor: `"deepmind"` (stride 4) or `"openai"` (DALL-E
                dVAE, stride 8).
            loss_flavor: `"l2"` (Gaussian) or `"logit_laplace"`.
            num_embeddings: int or `None`. Codebook size (per stage for
                `"rvq"`); `None` keeps the quantizer's default (512). FSQ and
                LFQ have no such argument: pass `levels` or `codebook_bits`.
            embedding_dim: int or `None`. Code size; `None` keeps the
                quantizer's default (64).
            n_hid: int. Base width of encoder and decoder.
            image_channels: int. Channels of the images.
            seed_faithful: bool. The original repo's VQ recipe (gradient
                codebook, no restarts) instead of the healthier default.
            **quantizer_kwargs: further arguments of the quantizer class, e.g.
                `dead_code_threshold=2.0`, `straight_through=True`,
                `levels=(8, 8, 8)` or `num_quantizers=8`; they override the
                defaults above (`use_ema=False` gives the gradient codebook
                without restarts).
        """
        check_positive_int("image_channels", image_channels)
        check_choice("vq_flavor", vq_flavor, tuple(QUANTIZERS))
        check_choice("enc_dec_flavor", enc_dec_flavor, tuple(ENCODER_DECODERS))
        reconstruction_loss = losses.get(loss_flavor)
        quantizer_class = QUANTIZERS[vq_flavor]
        for name, value in (
            ("num_embeddings", num_embeddings),
            ("embedding_dim", embedding_dim),
        ):
            if value is None:
                continue
            if name not in inspect.signature(quantizer_class).parameters:
                raise ValueError(
                    f"Argument `{name}` does not apply to vq_flavor={vq_flavor!r} "
                    f"({quantizer_class.__name__} sizes its codes with its own "
                    f"arguments). Received: {name}={value}"
                )
            quantizer_kwargs[name] = value
        # An explicit use_ema=False means the gradient codebook, which has no
        # restarts: it opts out of both defaults, as seed_faithful does.
        if not seed_faithful and quantizer_kwargs.get("use_ema", True):
            quantizer_kwargs = {
                **FLAVOR_DEFAULTS.get(vq_flavor, {}),
                **quantizer_kwargs,
            }
        encoder_class, decoder_class = ENCODER_DECODERS[enc_dec_flavor]
        output_channels = image_channels * reconstruction_loss.params_per_channel
        return cls(
            encoder=encoder_class(n_hid=n_hid, name="encoder"),
            quantizer=quantizer_class(name="quantizer", **quantizer_kwargs),
            decoder=decoder_class(
                n_hid=n_hid, output_channels=output_channels, name="decoder"
            ),
            reconstruction_loss=reconstruction_loss,
            image_channels=image_channels,
        )

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["image"]
        self._check_image_shape(input_shape)
        # Parts may come built (shared with another model, or built twice).
        features_shape = self.encoder.compute_output_shape(input_shape)
        quantized_shape, _ = self.quantizer.compute_output_shape(features_shape)
        for part, shape in (
            (self.encoder, input_shape),
            (self.quantizer, features_shape),
            (self.decoder, quantized_shape),
        ):
            if not part.built:
                part.build(shape)

    def call(self, inputs, training=False):
        features = self._features(inputs, training=training)
        quantized, tokens = self.quantizer(features, training=training)
        # Read right away: under tf.distribute on CPUs the replicas take turns
        # in threads that share each layer's loss list, and hand over only at
        # variable syncs (none from here on); the last entry is this replica's.
        # (Empty where Keras traces without collecting losses, e.g. JAX's
        # symbolic build.)
        losses = self.quantizer.losses
        latent_loss = losses[-1] if losses else ops.zeros((), "float32")
        decoder_output = self.decoder(quantized, training=training)
        reconstruction = self.reconstruction_loss.out_map(decoder_output)
        return {
            "reconstruction": ops.cast(reconstruction, "float32"),
            "tokens": tokens,
            "decoder_output": decoder_output,
            "latent_loss": latent_loss,
        }

    def compile(self, optimizer=None, loss=None, **kwargs):
        """Configures training; without arguments, AdamW(3e-4, decay 1e-4).

        Biases and codebooks are never weight-decayed, whatever the
        optimizer (as the original repo). The reconstruction loss is part of
        the model, so `loss` must stay `None`.
        """
        if loss is not None:
            raise ValueError(
                "VQVAE computes its own reconstruction and latent losses; pass "
                "`reconstruction_loss` to the constructor instead. "
                f"Received: loss={loss!r}"
            )
        if optimizer is None:
            optimizer = keras.optimizers.AdamW(learning_rate=3e-4, weight_decay=1e-4)
        optimizer = keras.optimizers.get(optimizer)
        if getattr(optimizer, "weight_decay", None):
            optimizer.exclude_from_weight_decay(var_names=["bias", "codebook"])
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips overridden `compile` methods when loading; ours is safe
        # to replay, and replaying it restores the optimizer and its state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (3.15) learns shapes under tf.distribute by reducing a real
        # batch across replicas in eager mode, which fails across workers
        # (MultiWorkerMirroredStrategy, keras-team/keras#20585). A built VQVAE
        # needs no shapes: build the optimizer, as the symbolic build would.
        if self.built and distribution.trains_across_workers(self):
            if self.optimizer is not None and not self.optimizer.built:
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if distribution.trains_across_workers(self):
            # Keras reduces the step's logs across workers along axis 0, which
            # scalars lack (keras-team/keras#20585); the mean of the replicas'
            # one-element logs is the same number.
            logs = {key: ops.reshape(value, (1,)) for key, value in logs.items()}
        return logs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        recon_loss = self._reconstruction_nll(x, y_pred["decoder_output"])
        latent_loss = y_pred["latent_loss"]
        self.recon_tracker.update_state(recon_loss)
        self.latent_tracker.update_state(latent_loss)
        self.codebook_usage.update_state(y_pred["tokens"])
        self.psnr_tracker.update_state(psnr(self._images(x), y_pred["reconstruction"]))
        # Under tf.distribute the replicas' gradients are summed: each replica
        # contributes its share, for the same step as on one device.
        return distribution.scale_loss_for_replicas(recon_loss + latent_loss)

    def _reconstruction_nll(self, x, decoder_output):
        """Mean NLL of this replica's batch; `Loss.__call__` would already
        divide by the replica count, which `compute_loss` does for all terms."""
        loss = self.reconstruction_loss
        targets = ops.cast(loss.in_map(self._images(x)), loss.dtype)
        return ops.mean(loss.call(targets, ops.cast(decoder_output, loss.dtype)))

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Returns `decode(encode(x))`, float32 `(N, H, W, C)` in [0, 1]."""
        return self._run_on_images(
            "reconstruct", x, batch_size, verbose, steps, callbacks
        )

    def encode(self, images, batch_size=None, verbose=0, steps=None):
        """Returns the int32 token grids `(N, H/stride, W/stride,
        *quantizer.token_shape)` of images.

        Raises:
            ValueError: on NaN or infinite pixels, naming the images.
        """
        return self._run_on_images("encode", images, batch_size, verbose, steps)

    def project(self, images, batch_size=None, verbose=0, steps=None):
        """Returns the float32 latents `(N, h, w, latent_dim)` that the
        quantizer quantizes (e.g. for k-means)."""
        return self._run_on_images("project", images, batch_size, verbose, steps)

    def decode(self, tokens, batch_size=None, verbose=0, steps=None):
        """Returns float32 images in [0, 1] decoded from int token grids.

        Raises:
            ValueError: on token ids outside `[0, vocabulary_size)`.
        """
        spec = _input_spec(tokens)
        if spec is not None:
            self._check_token_spec(*spec)
        outputs = self._inference.run("decode", tokens, batch_size, verbose, steps)
        bad = np.flatnonzero(~outputs["valid"])
        if bad.size:
            raise ValueError(
                "Argument `tokens` must hold ids in "
                f"[0, {self.quantizer.vocabulary_size}). Received ids from "
                f"{outputs['min_id'][bad].min()} to {outputs['max_id'][bad].max()} "
                f"in {_count_and_indices(bad, 'grid(s)')}"
            )
        return outputs["images"]

    def tokenize(self, images):
        """Token ids `(N, h, w, *token_shape)` of a batch of image tensors.

        The graph-level counterpart of `encode()`, for use inside compiled
        functions and exports (`encode()` batches arrays and datasets).
        """
        return self.quantizer.tokenize(self._features(images))

    def detokenize(self, tokens):
        """Float32 images in [0, 1] from a batch of token tensors; the
        graph-level counterpart of `decode()` (ids are not range-checked)."""
        decoder_output = self.decoder(self.quantizer.lookup(tokens))
        return ops.cast(self.reconstruction_loss.out_map(decoder_output), "float32")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.layers.serialize(self.encoder),
            "quantizer": keras.layers.serialize(self.quantizer),
            "decoder": keras.layers.serialize(self.decoder),
            "reconstruction_loss": keras.saving.serialize_keras_object(
                self.reconstruction_loss
            ),
            "image_channels": self.image_channels,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "quantizer", "decoder"):
            config[key] = keras.layers.deserialize(config[key])
        config["reconstruction_loss"] = keras.saving.deserialize_keras_object(
            config["reconstruction_loss"]
        )
        return cls(**config)

    # Graph pieces behind `encode`, `decode` and `predict`.

    def _features(self, inputs, training=False):
        images = self.reconstruction_loss.in_map(self._images(inputs))
        return self.encoder(images, training=training)

    def _encode_graph(self, inputs):
        return {"output": self.tokenize(inputs), **self._image_facts(inputs)}

    def _project_graph(self, inputs):
        features = self.quantizer.project(self._features(inputs))
        return {"output": features, **self._image_facts(inputs)}

    def _reconstruct_graph(self, inputs):
        # decode(encode(x)) by construction: the same token path as `encode`,
        # so near-ties between codes cannot make the two disagree.
        images = self.detokenize(self.tokenize(inputs))
        return {"output": images, **self._image_facts(inputs)}

    def _image_facts(self, inputs):
        """Per image: all pixels finite, and the height and width (shapes of
        datasets may only be known here, after the host-side checks)."""
        images = self._images(inputs)
        batch, height, width = ops.shape(images)[:3]
        return {
            "finite": ops.all(ops.isfinite(images), axis=(1, 2, 3)),
            "size": ops.broadcast_to(ops.stack([height, width]), (batch, 2)),
        }

    def _decode_graph(self, tokens):
        self._check_token_spec(tuple(tokens.shape), tokens.dtype)
        tokens = ops.cast(tokens, "int32")
        vocabulary_size = self.quantizer.vocabulary_size
        valid = ops.logical_and(tokens >= 0, tokens < vocabulary_size)
        per_grid = tuple(range(1, len(tokens.shape)))
        return {
            "images": self.detokenize(ops.clip(tokens, 0, vocabulary_size - 1)),
            "valid": ops.all(valid, axis=per_grid),
            "min_id": ops.min(tokens, axis=per_grid),
            "max_id": ops.max(tokens, axis=per_grid),
        }

    def _images(self, inputs):
        """Float images in [0, 1] from arrays, uint8 arrays or tfds dicts."""
        inputs = _image_entry(inputs)
        self._check_image_shape(inputs.shape)
        if keras.backend.is_float_dtype(inputs.dtype):
            return ops.cast(inputs, "float32")
        return ops.cast(inputs, "float32") / 255.0

    def _run_on_images(self, name, data, batch_size, verbose, steps, callbacks=None):
        self._check_image_spec(data)
        outputs = self._inference.run(name, data, batch_size, verbose, steps, callbacks)
        bad = np.flatnonzero(~outputs["finite"])
        if bad.size:
            raise ValueError(
                "Argument `images` must hold finite pixel values. Received NaN or "
                f"infinite values in {_count_and_indices(bad, 'image(s)')}"
            )
        for height, width in np.unique(outputs["size"], axis=0):
            self._check_image_shape((None, height, width, None))
        return outputs["output"]

    def _check_image_spec(self, data):
        # Checked on the host before any compiled step: TensorFlow retraces
        # with relaxed (unknown) shapes, and on JAX a trace that raises leaves
        # the model's variables purged.
        spec = _input_spec(data)
        if spec is not None:
            self._check_image_shape(spec[0])

    def _check_token_spec(self, shape, dtype):
        dtype = keras.backend.standardize_dtype(dtype)
        if "int" not in dtype:
            raise ValueError(
                f"Argument `tokens` must have an integer dtype. Received: {dtype}"
            )
        token_shape = tuple(self.quantizer.token_shape)
        if len(shape) != 3 + len(token_shape) or tuple(shape[3:]) != token_shape:
            expected = ", ".join(("batch", "height", "width", *map(str, token_shape)))
            raise ValueError(
                f"Argument `tokens` must have shape ({expected}). "
                f"Received: tokens.shape={tuple(shape)}"
            )

    def _check_image_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                "Argument `images` must have shape (batch, height, width, "
                f"channels). Received: images.shape={shape}"
            )
        if shape[-1] is not None and shape[-1] != self.image_channels:
            raise ValueError(
                f"Argument `images` must have {self.image_channels} channels, as "
                f"the model was built with image_channels={self.image_channels}. "
                f"Received: images.shape={shape}"
            )
        for size in shape[1:3]:
            if self.stride and size is not None and size % self.stride:
                raise ValueError(
                    "Argument `images` must have a height and width divisible by "
                    f"the encoder stride {self.stride}. Received: "
                    f"images.shape={shape}"
                )


def _count_and_indices(bad, noun):
    """`"3 image(s), at indices [0, 4, 9]"`, the indices cut after ten."""
    more = " ..." if bad.size > 10 else ""
    return f"{bad.size} {noun}, at indices {bad[:10].tolist()}{more}"


def _input_spec(data):
    """`(shape, dtype)` of the images or tokens in `data`, or `None` if unknown.

    Understands arrays and tensors, tf.data datasets (their element spec) and
    the `(x, y)` and `{"image": x}` structures that Keras' `predict` accepts.
    """
    if hasattr(data, "element_spec"):
        data = data.element_spec
    if isinstance(data, (tuple, list)) and data:
        data = data[0]
    data = _image_entry(data)
    shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
    if shape is None or dtype is None or getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape), dtype


def _image_entry(data):
    """The images of a tfds-style dict (`data` itself if not a dict)."""
    if not isinstance(data, dict):
        return data
    if "image" not in data:
        raise ValueError(
            "Dict inputs must hold the images under the key 'image' (as "
            f"tensorflow-datasets does). Received keys: {sorted(data)}"
        )
    return data["image"]


class _InferenceModel(keras.Model):
    """Runs one graph method of a VQVAE through Keras' own `predict`, which
    batches arrays and datasets and compiles the step on every backend."""

    def __init__(self, vqvae, method, **kwargs):
        super().__init__(**kwargs)
        self.vqvae = vqvae
        self.method = method

    def call(self, inputs):
        return getattr(self.vqvae, self.method)(inputs)


class _InferenceModels:
    """Caches the `_InferenceModel`s of a VQVAE.

    A plain object on purpose: Keras neither tracks nor saves what it holds,
    so the cached models never appear in the VQVAE's layers or `.keras` file.
    """

    def __init__(self, vqvae):
        self.vqvae = vqvae
        self.models = {}

    def run(self, name, data, batch_size, verbose, steps, callbacks=None):
        if name not in self.models:
            self.models[name] = _InferenceModel(
                self.vqvae, f"_{name}_graph", name=f"{self.vqvae.name}_{name}"
            )
        if not self.vqvae.built:
            raise ValueError(
                f"`{name}` needs a built model: call `fit()`, `build()` or the "
                "model itself on a batch first, or load a saved model."
            )
        # Keras' JAX `predict` purges the model's variables while it runs and
        # loses them if the step raises (e.g. a dataset whose shapes are only
        # known in the trace): keep references (JAX arrays are immutable) to
        # put them back.
        variables = self.vqvae.variables
        on_jax = keras.backend.backend() == "jax"
        values = [variable.value for variable in variables] if on_jax else []
        model = self.models[name]
        data, count = _pad_for_data_parallel(data, batch_size)
        try:
            if _batch_by_batch(model, data, verbose, steps, callbacks):
                outputs = _predict_in_batches(model, data, batch_size or 32)
            else:
                outputs = model.predict(
                    data,
                    batch_size=batch_size,
                    verbose=verbose,
                    steps=steps,
                    callbacks=callbacks,
                )
            return keras.tree.map_structure(lambda x: x[:count], outputs)
        except Exception:
            for variable, value in zip(variables, values, strict=False):
                variable.assign(value)
            raise


def _batch_by_batch(model, data, verbose, steps, callbacks):
    """Whether `_predict_in_batches` can stand in for `model.predict`: a
    non-empty array, no progress bar, steps or callbacks, one replica."""
    return (
        isinstance(data, np.ndarray)
        and len(data) > 0
        and not verbose
        and steps is None
        and not callbacks
        and not distribution.is_distributed(model)
    )


def _predict_in_batches(model, data, batch_size):
    """`model.predict(data, batch_size=batch_size)` for an in-memory array,
    one `predict_on_batch` call per batch.

    Keras' `predict` builds an input pipeline on every call (a tf.data one on
    TensorFlow, whose set-up and autotuning thread took 0.6-1 s a call on a
    2-core CPU): more than the compiled steps of a thousand 32x32 images.
    """
    batches = [
        model.predict_on_batch(data[start : start + batch_size])
        for start in range(0, len(data), batch_size)
    ]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


def _pad_for_data_parallel(data, batch_size):
    """Pads arrays so that every batch splits evenly over the devices of a
    `keras.distribution` (JAX), which cannot shard a ragged last batch.

    Returns the data and the number of real rows (`None`: all of them).
    """
    distribution = keras.distribution.distribution()
    arrays = keras.tree.flatten(data)
    if distribution is None or not all(isinstance(a, np.ndarray) for a in arrays):
        return data, None
    mesh = distribution.device_mesh
    devices = dict(zip(mesh.axis_names, mesh.shape, strict=True))[
        distribution.batch_dim_name
    ]
    if (batch_size or 32) % devices:
        raise ValueError(
            f"Argument `batch_size` must be a multiple of the {devices} devices "
            f"the batch is split over. Received: batch_size={batch_size}"
        )
    count = len(arrays[0])
    padding = -count % devices
    if padding:
        data = keras.tree.map_structure(
            lambda a: np.concatenate([a, np.repeat(a[-1:], padding, axis=0)]), data
        )
    return data, count
