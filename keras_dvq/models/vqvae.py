import keras
import numpy as np
from keras import ops

from keras_dvq import distribution
from keras_dvq import losses
from keras_dvq.evaluation.measures import psnr
from keras_dvq.metrics import CodebookUsage
from keras_dvq.models import flavors
from keras_dvq.models.inference import InferenceModels
from keras_dvq.models.inputs import check_image_shape
from keras_dvq.models.inputs import check_token_spec
from keras_dvq.models.inputs import count_and_indices
from keras_dvq.models.inputs import image_entry
from keras_dvq.models.inputs import input_spec
from keras_dvq.utils.validation import check_positive_int

# Re-exported: scripts and older code import the registries from here.
ENCODER_DECODERS = flavors.ENCODER_DECODERS
QUANTIZERS = flavors.QUANTIZERS
FLAVOR_DEFAULTS = flavors.FLAVOR_DEFAULTS
HEALTHY_VQ_DEFAULTS = flavors.HEALTHY_VQ_DEFAULTS


@keras.saving.register_keras_serializable(package="keras_dvq")
class VQVAE(keras.Model):
    """An autoencoder with a discrete bottleneck: encoder, quantizer, decoder.

    Images go through the reconstruction loss's in-map, the encoder, the
    quantizer (which hands back its latent loss) and the decoder, whose output
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
    (the likelihood parameters) and `"latent_loss"` (the quantizer's latent
    loss of this call, also in `model.losses`). `encode()` and `decode()` map
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
        image_size: int or `None`. Side of the square images the model was
            trained at, divisible by the encoder's stride: the size that
            scripts (export, tokenize, evaluate) default to. The network is
            fully convolutional and takes any size divisible by the stride;
            this only records the training one. `None` (files written before
            it was recorded): unknown. Defaults to `None`.
        **kwargs: base model keyword arguments, such as `name`.

    Example:

    ```python
    model = VQVAE.from_flavors(vq_flavor="vq", enc_dec_flavor="deepmind")
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
        image_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.reconstruction_loss = losses.get(reconstruction_loss)
        self.image_channels = check_positive_int("image_channels", image_channels)
        self.stride = getattr(encoder, "stride", None)
        if image_size is not None:
            check_positive_int("image_size", image_size)
            if self.stride and image_size % self.stride:
                raise ValueError(
                    "Argument `image_size` must be divisible by the encoder "
                    f"stride {self.stride}. Received: image_size={image_size}"
                )
        self.image_size = image_size
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
        self._inference = InferenceModels(self)

    @classmethod
    def from_flavors(
        cls,
        vq_flavor="vq",
        enc_dec_flavor="deepmind",
        loss_flavor="l2",
        num_embeddings=None,
        embedding_dim=None,
        n_hid=None,
        image_channels=3,
        seed_faithful=False,
        enc_dec_kwargs=None,
        image_size=None,
        **quantizer_kwargs,
    ):
        """Builds a model from the original repo's flags and defaults.

        The `"vq"` and `"rvq"` quantizers default to EMA codebooks with
        dead-code restarts (`use_ema=True, dead_code_threshold=1.0`), which
        keep the codebook in use where the original recipe collapses; pass
        `seed_faithful=True` for the original's gradient-trained codebook.

        Args:
            vq_flavor: `"vq"` (`VectorQuantizer`, nearest code),
                `"gumbel"` (`GumbelQuantizer`), `"fsq"`
                (`FiniteScalarQuantizer`), `"lfq"` (`LookupFreeQuantizer`) or
                `"rvq"` (`ResidualVectorQuantizer`). The old name `"vqvae"`
                still gives `"vq"`, with a `FutureWarning`.
            enc_dec_flavor: `"deepmind"` (stride 4), `"dalle"` (DALL-E
                dVAE, stride 8; `DalleEncoder`, `DalleDecoder`) or `"vqgan"`
                (taming's VQGAN network, stride `2 ** (len(ch_mult) - 1)`;
                `VQGANEncoder`, `VQGANDecoder`, sized by `enc_dec_kwargs`).
                The old name `"openai"` still gives `"dalle"`, with a
                `FutureWarning`.
            loss_flavor: `"l2"` (Gaussian) or `"logit_laplace"`.
            num_embeddings: int or `None`. Codebook size (per stage for
                `"rvq"`); `None` keeps the quantizer's default (512). FSQ and
                LFQ have no such argument: pass `levels` or `codebook_bits`.
            embedding_dim: int or `None`. Code size; `None` keeps the
                quantizer's default (64).
            n_hid: int or `None`. Base width of the `"deepmind"` and
                `"dalle"` encoder and decoder (the original repo's flag; the
                token prior's `hidden_dim` is another network's width); `None`
                keeps their default, 64. `"vqgan"` takes `ch` in
                `enc_dec_kwargs` instead.
            image_channels: int. Channels of the images.
            seed_faithful: bool. The original repo's VQ recipe (gradient
                codebook, no restarts) instead of the healthier default.
            enc_dec_kwargs: dict or `None`. The encoder/decoder flavor's own
                arguments, each given to the encoder and/or decoder class
                that takes it, e.g. `{"ch": 64, "ch_mult": (1, 2, 2),
                "attn_levels": (2,), "z_channels": 64}` for `"vqgan"` or
                `{"n_blk_per_group": 1}` for `"dalle"`. An argument neither
                class takes raises `ValueError`.
            image_size: int or `None`. The training image size to record
                (see the class's `image_size`).
            **quantizer_kwargs: further arguments of the quantizer class, e.g.
                `dead_code_threshold=2.0`, `straight_through=True`,
                `levels=(8, 8, 8)` or `num_quantizers=8`; they override the
                defaults above (`use_ema=False` gives the gradient codebook
                without restarts).
        """
        return cls(
            **flavors.model_arguments(
                vq_flavor=vq_flavor,
                enc_dec_flavor=enc_dec_flavor,
                loss_flavor=loss_flavor,
                num_embeddings=num_embeddings,
                embedding_dim=embedding_dim,
                n_hid=n_hid,
                image_channels=image_channels,
                seed_faithful=seed_faithful,
                enc_dec_kwargs=enc_dec_kwargs,
                **quantizer_kwargs,
            ),
            image_size=image_size,
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
        # The latent loss comes back with this call's outputs: under
        # tf.distribute the replicas run this in threads that share the
        # quantizer's loss list, so reading it back could give another
        # replica's loss.
        quantized, tokens, latent_loss = self.quantizer(
            features, training=training, return_loss=True
        )
        # Also in `model.losses`; `compute_loss` reads the returned one.
        self.add_loss(latent_loss)
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
        spec = input_spec(tokens)
        if spec is not None:
            self._check_token_spec(*spec)
        outputs = self._inference.run("decode", tokens, batch_size, verbose, steps)
        bad = np.flatnonzero(~outputs["valid"])
        if bad.size:
            raise ValueError(
                "Argument `tokens` must hold ids in "
                f"[0, {self.quantizer.vocabulary_size}). Received ids from "
                f"{outputs['min_id'][bad].min()} to {outputs['max_id'][bad].max()} "
                f"in {count_and_indices(bad, 'grid(s)')}"
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
            "image_size": self.image_size,
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
        inputs = image_entry(inputs)
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
                f"infinite values in {count_and_indices(bad, 'image(s)')}"
            )
        for height, width in np.unique(outputs["size"], axis=0):
            self._check_image_shape((None, height, width, None))
        return outputs["output"]

    def _check_image_spec(self, data):
        # On the host, before any compiled step (see inputs.py).
        spec = input_spec(data)
        if spec is not None:
            self._check_image_shape(spec[0])

    def _check_token_spec(self, shape, dtype):
        check_token_spec(shape, dtype, self.quantizer.token_shape)

    def _check_image_shape(self, shape):
        check_image_shape(shape, self.image_channels, self.stride)
