"""Timing windows of a model, its identity-bottleneck twin and the reference.

The twin is the same network with the quantizer replaced by its 1x1
projection (no code search), timed in alternation with the model so that the
quantizer's overhead is a ratio from one run; the PyTorch reference loop runs
in the same rounds, so that every figure is also a ratio to it.
"""

import os
import time

import keras
from keras import ops

from benchmarks.config import LARGE
from benchmarks.config import LARGE_SETTINGS
from benchmarks.config import MODELS
from benchmarks.config import VQGAN_CODEBOOKS
from benchmarks.config import VQGAN_IMAGE_SIZE
from benchmarks.config import VQGAN_RECIPE
from benchmarks.config import VQGAN_SETTINGS
from benchmarks.data import sample_images
from benchmarks.probes import host_round_trips
from benchmarks.probes import peak_memory_mb
from benchmarks.reference import ReferenceLoop
from benchmarks.reference import VQModelLoop
from benchmarks.report import window_ratios
from benchmarks.run import ROOT
from keras_dvq.layers import Quantizer
from keras_dvq.models import VQVAE
from keras_dvq.training.flags import parse_train_config


class IdentityBottleneck(Quantizer):
    """The quantizer's 1x1 projection to `embedding_dim`, passed through.

    Tokens are zeros, so the model's usage histogram costs the same as
    with a quantizer: what differs is the code search, lookup, latent
    loss and codebook update.

    Args:
        num_embeddings: int. The vocabulary size it reports (no codebook).
        embedding_dim: int. The projection's output size.
        **kwargs: `Layer` arguments (`name`, `dtype`).

    Example:

    ```python
    bottleneck = IdentityBottleneck(num_embeddings=512, embedding_dim=64)
    z, tokens = bottleneck(np.zeros((2, 8, 8, 128)))  # (2, 8, 8, 64), (2, 8, 8)
    ```
    """

    def __init__(self, num_embeddings=512, embedding_dim=64, **kwargs):
        super().__init__(latent_dim=embedding_dim, **kwargs)
        self.num_embeddings = self.vocabulary_size = num_embeddings
        self.embedding_dim = self.quantized_dim = embedding_dim

    def quantize_latents(self, latents, training=False):
        return latents, self.tokens_of(latents), ops.zeros((), "float32")

    def tokens_of(self, latents):
        return ops.zeros(ops.shape(latents)[:-1], "int32")


def vqgan_recipe(name="vqgan"):
    """`recipes/vqgan-small.json`'s network options, codebook size (or
    `VQGAN_CODEBOOKS[name]`'s) and dimension, read as `train.py --hparams`
    reads it."""
    recipe = os.path.join(ROOT, VQGAN_RECIPE)
    config = parse_train_config(["--hparams", recipe, "--out", "unused"])
    codes = VQGAN_CODEBOOKS[name] or config.num_embeddings
    return config.network_options(), codes, config.embedding_dim


def model_arguments(name, config):
    """`VQVAE.from_flavors` arguments of model `name`."""
    flavors = MODELS["deepmind" if name in LARGE else name]
    if name not in VQGAN_CODEBOOKS:
        return dict(
            **flavors,
            num_embeddings=config["num_embeddings"],
            embedding_dim=64,
            n_hid=config["n_hid"],
        )
    network, num_embeddings, embedding_dim = vqgan_recipe(name)
    # taming's (and diffusers') quantizer: gradient codebook, 0.25 commitment.
    return dict(
        **flavors,
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        use_ema=False,
        commitment_cost=0.25,
        latent_loss_weight=1.0,
        enc_dec_kwargs=network,
    )


def build_models(name, config):
    """The model and its identity-bottleneck twin, compiled alike."""
    arguments = model_arguments(name, config)
    model = VQVAE.from_flavors(**arguments)
    # The twin's encoder and decoder: fresh copies of the model's own.
    bottleneck = IdentityBottleneck(
        arguments["num_embeddings"], arguments["embedding_dim"], name="quantizer"
    )
    twin = VQVAE(
        encoder=type(model.encoder).from_config(model.encoder.get_config()),
        quantizer=bottleneck,
        decoder=type(model.decoder).from_config(model.decoder.get_config()),
        reconstruction_loss=arguments["loss_flavor"],
    )
    shape = (None, config["image_size"], config["image_size"], 3)
    for m in (model, twin):
        m.build(shape)
        m.compile()
    return model, twin


def reference_loop(name, config):
    """The PyTorch loop `name` is timed against: diffusers' `VQModel` of the
    same configuration for vqgan, else the original DeepMind VQ-VAE."""
    if name in VQGAN_CODEBOOKS:
        return VQModelLoop(*vqgan_recipe(name))
    return ReferenceLoop(config["n_hid"], config["num_embeddings"])


class StepTimer(keras.callbacks.Callback):
    """Records when each training step's logs are ready.

    `async_safe`: on JAX and PyTorch Keras hands the logs to a thread, which
    waits for the step to finish; timing there does not stall the loop.

    Example:

    ```python
    timer = StepTimer()
    model.fit(images, batch_size=8, callbacks=[timer])
    timer.times  # perf_counter() at each step's end
    ```
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def window_rate(times, batch_size):
    """Images/s from the end of the first step to the end of the last."""
    times = sorted(times)
    return (len(times) - 1) * batch_size / (times[-1] - times[0])


def timed_fit(model, images, batch_size):
    """Images/s of one `fit` call, from the first step's end to the last's:
    the call's set-up, its first step and its end are left out."""
    timer = StepTimer()
    model.fit(
        images,
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return window_rate(timer.times, batch_size)


def timed_encode(model, images, batch_size):
    """Images/s of one `model.encode` call."""
    start = time.perf_counter()
    model.encode(images, batch_size=batch_size)
    return len(images) / (time.perf_counter() - start)


def distance_sizes(model, batch_size, image_size):
    """The `(rows, codes)` float32 distances of one training step in MB, and
    the part of them that the blocked code search holds at once. A quantizer
    without a blocked search (Gumbel's logits) holds them all."""
    rows = batch_size * (image_size // model.encoder.stride) ** 2
    block_rows = min(rows, getattr(model.quantizer, "search_block_rows", rows))
    codes = model.quantizer.vocabulary_size
    return {
        "distance_matrix_mb": rows * codes * 4 / 2**20,
        "distance_block_mb": block_rows * codes * 4 / 2**20,
    }


def measure_model(name, config, device):
    """Training and encode throughput of model `name` (a key of `MODELS` or
    `LARGE`), its identity twin and the reference loop, in alternating rounds
    of timed windows; with the distance-matrix sizes, memory and host round-trips.
    """
    size = config["image_size"]
    config = {**config, "num_embeddings": 512, "image_size": size or 32}
    if name in VQGAN_CODEBOOKS:
        config.update(
            VQGAN_SETTINGS["quick" if config["quick"] else "full"],
            image_size=size or VQGAN_IMAGE_SIZE,
            encode_batches=2,
        )
    if name in LARGE:
        config.update(
            LARGE_SETTINGS["quick" if config["quick"] else "full"],
            num_embeddings=8192,
            image_size=LARGE[name],
            encode_batches=4,
        )
    batch_size, size = config["batch_size"], config["image_size"]
    model, twin = build_models(name, config)
    window = sample_images(config["window_steps"] * batch_size, image_size=size)
    encode_images = sample_images(
        config["encode_batches"] * batch_size, "validation", image_size=size
    )
    # Warm-up: compilation and the first steps of each configuration.
    for m in (model, twin):
        m.fit(
            window[: config["warmup_steps"] * batch_size or batch_size],
            batch_size=batch_size,
            epochs=1,
            verbose=0,
        )
    model.encode(encode_images, batch_size=batch_size)
    reference = reference_loop(name, config)
    reference.timed_window(window[: 2 * batch_size], batch_size)  # warm-up
    # Rounds of quantizer, identity, reference and encode windows, the
    # training order reversed every round (A B R, R B A, ...): load drifts
    # hit all of them alike.
    train, identity, encode, references = [], [], [], []
    for index in range(config["rounds"]):
        trio = [
            (train, lambda: timed_fit(model, window, batch_size)),
            (identity, lambda: timed_fit(twin, window, batch_size)),
            (references, lambda: reference.timed_window(window, batch_size)),
        ]
        for rates, timed in trio if index % 2 == 0 else trio[::-1]:
            rates.append(timed())
        encode.append(timed_encode(model, encode_images, batch_size))
    windows = {
        "train": train,
        "identity": identity,
        "encode": encode,
        "reference": references,
    }
    return {
        "model": name,
        "parameters": model.count_params(),
        "batch_size": batch_size,
        "image_size": size,
        "num_embeddings": model.quantizer.vocabulary_size,
        **distance_sizes(model, batch_size, size),
        **window_ratios(windows),
        "reference_threads": reference.threads,
        "windows": windows,
        "host_round_trips": host_round_trips(model, window[:batch_size]),
        "peak_memory_mb": peak_memory_mb(device),
        "memory_kind": "device peak" if device == "gpu" else "process max RSS",
    }
