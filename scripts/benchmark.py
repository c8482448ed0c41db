"""Training and tokenization throughput of the VQ-VAEs on every backend.

    python scripts/benchmark.py [--backend tensorflow|jax|torch] [--device cpu|gpu]
        [--models deepmind,dalle] [--batch_size 128] [--mixed_precision]
        [--quick] [--out benchmark.json]

For the DeepMind VQ-VAE and the DALL-E dVAE (Gumbel quantizer, logit-Laplace
loss), both with 512 codes of dimension 64 and `n_hid` 64 on 32x32 images,
and for each installed Keras backend (one process per backend and model,
since the backend is fixed at import):

- training throughput of `model.fit` on in-memory batches (images/s, median
  of timed windows after a warm-up);
- the same model with an identity bottleneck (the quantizer's 1x1
  projection, no code search) timed in alternation with it, so that the
  quantizer's overhead is a ratio from one run;
- tokenization throughput of `model.encode` on arrays, in the same rounds;
- peak memory: the process' maximum resident set on CPU, the device's peak
  allocation on GPU;
- whether the compiled training step runs without host round-trips;
- the `sample` tf.data input pipeline alone (images/s);
- the reference: a plain PyTorch training loop of the original DeepMind
  VQ-VAE (`reference_model`, 695,491 parameters, gradient codebook, AdamW,
  the original's loss), timed on the same batches in the same rounds and
  process as each Keras model; every Keras figure is also given as a ratio
  to it, since absolute figures on shared machines move by 2x;
- a whole `fit` of `scripts/train.py`'s path (the `sample` pipeline with
  augmentation, validation every epoch, its callbacks and backups; 2
  epochs) beside its own median step, between reference windows: images/s,
  the ratio to the reference, and how far the whole `fit` runs over the
  time of its training and validation steps (epoch starts, callbacks,
  stalls; `fit_over_steps`).

Writes the results as JSON (`--out`) and prints a table. `--mixed_precision`
adds the DeepMind model under `mixed_bfloat16` (throughput, and the codebook
usage after a short training against float32). `--quick` is a smoke run with
tiny sizes (used by the tests); its figures mean nothing.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
PY_FUNCTION_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless")
# The DALL-E dVAE as its recipe trains it: Gumbel quantizer, logit-Laplace loss.
MODELS = {
    "deepmind": {
        "vq_flavor": "vqvae",
        "enc_dec_flavor": "deepmind",
        "loss_flavor": "l2",
    },
    "dalle": {
        "vq_flavor": "gumbel",
        "enc_dec_flavor": "openai",
        "loss_flavor": "logit_laplace",
    },
}
# DALL-E's codebook size on larger images: the DeepMind VQ-VAE (stride 4)
# with 8,192 codes; the distance matrix holds batch * (size / 4)^2 * 8,192
# floats, which the code search computes in blocks (SEARCH_BLOCK_ELEMENTS).
LARGE = {"deepmind_k8192_64": 64, "deepmind_k8192_128": 128}
LARGE_SETTINGS = {
    "full": {"batch_size": 32, "warmup_steps": 2, "window_steps": 6},
    "quick": {"batch_size": 2, "warmup_steps": 1, "window_steps": 2},
}
FULL = {
    "batch_size": 128,
    "n_hid": 64,
    "warmup_steps": 4,
    "window_steps": 12,
    "rounds": 5,
    "encode_batches": 32,
    "pipeline_batches": 150,
    "usage_steps": 300,
    "fit_batch_size": 128,
    "fit_epochs": 2,
    "fit_folder_images": None,  # all of `sample`
}
QUICK = {
    "batch_size": 8,
    "n_hid": 8,
    "warmup_steps": 1,
    "window_steps": 3,
    "rounds": 2,
    "encode_batches": 2,
    "pipeline_batches": 6,
    "usage_steps": 3,
    # The whole path on a folder of 200 of `sample`'s patches (180 train):
    # 11 steps an epoch, instead of passes over all of `sample`.
    "fit_batch_size": 16,
    "fit_epochs": 2,
    "fit_folder_images": 200,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--backend", default=None, help="comma-separated; default: all installed")
    add("--device", choices=["cpu", "gpu"], default="cpu")
    add(
        "--models",
        default="deepmind,dalle",
        help="comma-separated: deepmind,dalle,deepmind_k8192_64,deepmind_k8192_128",
    )
    add("--batch_size", type=_positive_int, help="default 128 (8 with --quick)")
    add("--rounds", type=_positive_int, help="timed windows per configuration")
    add("--mixed_precision", action="store_true", help="also mixed_bfloat16")
    add("--quick", action="store_true", help="tiny smoke run; figures mean nothing")
    add("--out", default="benchmark.json", help="JSON results")
    # One measurement in this process (what the parent launches).
    add("--worker", default=None, help=argparse.SUPPRESS)
    add("--policy", default="float32", help=argparse.SUPPRESS)
    add("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS) - set(LARGE)
    if unknown:
        choices = list(MODELS) + list(LARGE)
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {choices}")
    unknown = set((args.backend or "tensorflow").split(",")) - set(BACKENDS)
    if unknown:
        parser.error(f"--backend: unknown {sorted(unknown)}; choose from {BACKENDS}")
    return args


def _positive_int(text):
    # Local, not keras_dvq.recipe's: importing that would import keras, and
    # the parent process must stay free of any backend.
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def settings(args):
    config = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.batch_size:
        config["batch_size"] = config["fit_batch_size"] = args.batch_size
    if args.rounds:
        config["rounds"] = args.rounds
    return config


# ---------------------------------------------------------------------------
# The parent: one subprocess per measurement, then the table.


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    backends = args.backend.split(",") if args.backend else installed_backends()
    models = args.models.split(",")
    report = {
        "machine": machine_info(args.device),
        "settings": {**settings(args), "device": args.device, "quick": args.quick},
        "pipeline": launch(args, "tensorflow", "pipeline"),
        "backends": {},
    }
    for backend in backends:
        results = report["backends"][backend] = {}
        tasks = [(model, model, "float32") for model in models]
        if "deepmind" in models:
            tasks.append(("fit", "fit", "float32"))
        if args.mixed_precision and "deepmind" in models:
            tasks.append(("deepmind_mixed_bfloat16", "deepmind", "mixed_bfloat16"))
            tasks.append(("fit_mixed_bfloat16", "fit", "mixed_bfloat16"))
            tasks += [(f"usage_{p}", "usage", p) for p in ("float32", "mixed_bfloat16")]
        for key, task, policy in tasks:
            results[key] = launch(args, backend, task, policy)
            _write(report, args.out)  # what is measured survives an interruption
    report["machine"]["load_average_after"] = os.getloadavg()
    _write(report, args.out)
    print(format_table(report))
    print(f"\nWrote {args.out}")
    return 1 if failures(report) else 0


def failures(report):
    """The measurements that ended in an error."""
    results = [report["pipeline"]]
    results += [r for b in report["backends"].values() for r in b.values()]
    return [r["error"] for r in results if "error" in r]


def _write(report, path):
    with open(path, "w") as file:
        json.dump(report, file, indent=2)


def installed_backends():
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def machine_info(device):
    return {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def launch(args, backend, task, policy="float32"):
    """Runs one measurement in a fresh process and returns its JSON."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    if args.device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="-1", JAX_PLATFORMS="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--worker", task]
        command += ["--policy", policy, "--result", result, "--device", args.device]
        if args.quick:
            command.append("--quick")
        if args.batch_size:
            command += ["--batch_size", str(args.batch_size)]
        if args.rounds:
            command += ["--rounds", str(args.rounds)]
        label = f"{backend} {task}" + ("" if policy == "float32" else f" {policy}")
        print(f"... {label}", file=sys.stderr, flush=True)
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode:
            tail = "\n".join(completed.stderr.splitlines()[-15:])
            return {"error": f"exit {completed.returncode}: {tail}"}
        with open(result) as file:
            return json.load(file)


def format_table(report):
    """The per-step table, the whole-fit table and the usage table."""
    lines = [
        "| backend | model | train img/s | reference img/s | train / reference "
        "| identity / reference | quantizer overhead | encode img/s | encode / train "
        "| pipeline / train | peak memory MB | host round-trips |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pipeline = report["pipeline"].get("images_per_s")
    fits = []
    for backend, results in report["backends"].items():
        for name, r in results.items():
            if name.startswith("usage_"):
                continue
            if "error" in r:
                lines.append(f"| {backend} | {name} | error: {r['error'][-80:]} |")
                continue
            if name.startswith("fit"):
                fits.append((backend, r))
                continue
            ratio = f"{pipeline / r['train_images_per_s']:.1f}x" if pipeline else "-"
            if name in LARGE:
                name += f" (batch {r['batch_size']})"
            lines.append(
                f"| {backend} | {name} | {r['train_images_per_s']:,.0f} "
                f"| {r['reference_images_per_s']:,.0f} "
                f"| {r['train_over_reference']:.2f}x "
                f"| {r['identity_over_reference']:.2f}x "
                f"| {100 * r['quantizer_overhead']:+.1f}% "
                f"| {r['encode_images_per_s']:,.0f} "
                f"| {r['encode_over_train']:.1f}x | {ratio} "
                f"| {r['peak_memory_mb']:,.0f} | {r['host_round_trips']['per_step']} |"
            )
    if pipeline:
        lines.append(f"\ninput pipeline (`sample`, tf.data): {pipeline:,.0f} images/s")
    if fits:
        lines.append(
            "\nWhole `fit` of scripts/train.py's path (`sample` pipeline with "
            "augmentation, validation every epoch, its callbacks):\n\n"
            "| backend | policy | steps | fit img/s | step img/s | reference img/s "
            "| fit / reference | step / reference | fit over steps | slowest step s "
            "| val PSNR | codes used |\n" + "|---" * 12 + "|"
        )
        for backend, r in fits:
            lines.append(
                f"| {backend} | {r['policy']} | {r['train_steps']} "
                f"| {r['images_per_s']:,.0f} | {r['step_images_per_s']:,.0f} "
                f"| {r['reference_images_per_s']:,.0f} "
                f"| {r['fit_over_reference']:.2f}x | {r['step_over_reference']:.2f}x "
                f"| {100 * r['fit_over_steps']:+.1f}% "
                f"| {r['slowest_steps'][-1][1]:.2f} "
                f"| {r['validation']['psnr']:.2f} "
                f"| {r['validation']['cluster_use']:.0f} |"
            )
    usage = [
        (backend, name[len("usage_") :], r)
        for backend, results in report["backends"].items()
        for name, r in results.items()
        if name.startswith("usage_") and "error" not in r
    ]
    if usage:
        lines.append(
            "\n| backend | policy | steps | val recon_loss | perplexity | codes used |"
        )
        lines.append("|---|---|---|---|---|---|")
        for backend, policy, r in usage:
            lines.append(
                f"| {backend} | {policy} | {r['steps']} | {r['recon_loss']:.4f} "
                f"| {r['perplexity']:.1f} | {r['cluster_use']:.0f} |"
            )
    load = report["machine"]
    lines.append(
        f"\n{load['processor']}, {load['cpu_count']} cores, device {load['device']}; "
        f"load average before {_load(load['load_average_before'])}, "
        f"after {_load(load.get('load_average_after', []))}"
    )
    return "\n".join(lines)


def _load(values):
    return "/".join(f"{v:.2f}" for v in values)


# ---------------------------------------------------------------------------
# The reference: a plain PyTorch training loop of the original architecture.


def reference_model(n_hid=64, num_embeddings=512, embedding_dim=64):
    """The original repo's DeepMind VQ-VAE as a plain `torch.nn.Module`.

    Written here from the layer shapes of `keras_dvq.models.deepmind` (NCHW):
    encoder `conv4x4/2, conv4x4/2, conv3x3, 2 residual blocks`, a 1x1
    projection to `embedding_dim`, a codebook of `num_embeddings` codes
    trained by gradient, decoder `conv3x3, 2 residual blocks, convT4x4/2,
    convT4x4/2`. With the defaults it has 695,491 parameters.

    `model(x)` takes images in-mapped to `[-0.5, 0.5]` and returns the
    reconstruction, the latent loss and the token ids.
    """
    import torch
    from torch import nn
    from torch.nn import functional

    class ResidualBlock(nn.Module):
        # relu(x + conv1x1(relu(conv3x3(x)))), as DeepMindResidualBlock.
        def __init__(self, channels, hidden):
            super().__init__()
            self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
            self.conv_out = nn.Conv2d(hidden, channels, 1)

        def forward(self, x):
            return functional.relu(x + self.conv_out(functional.relu(self.conv_in(x))))

    class ReferenceVQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            wide = 2 * n_hid
            self.encoder = nn.Sequential(
                nn.Conv2d(3, n_hid, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(n_hid, wide, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(wide, wide, 3, padding=1),
                nn.ReLU(),
                ResidualBlock(wide, n_hid // 2),
                ResidualBlock(wide, n_hid // 2),
            )
            self.projection = nn.Conv2d(wide, embedding_dim, 1)
            self.codebook = nn.Parameter(
                torch.empty(num_embeddings, embedding_dim).uniform_(
                    -1 / num_embeddings, 1 / num_embeddings
                )
            )
            self.decoder = nn.Sequential(
                nn.Conv2d(embedding_dim, wide, 3, padding=1),
                nn.ReLU(),
                ResidualBlock(wide, n_hid // 2),
                ResidualBlock(wide, n_hid // 2),
                nn.ConvTranspose2d(wide, n_hid, 4, stride=2, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(n_hid, 3, 4, stride=2, padding=1),
            )

        def forward(self, x):
            z_e = self.projection(self.encoder(x)).permute(0, 2, 3, 1)
            flat = z_e.reshape(-1, z_e.shape[-1])
            # Nearest code: argmin of |e|^2 - 2 z.e (|z|^2 is constant per row).
            distances = self.codebook.square().sum(1) - 2 * flat @ self.codebook.T
            tokens = distances.argmin(1).view(z_e.shape[:-1])
            codes = self.codebook[tokens]
            # VQ-VAE eq. 3: codebook term + beta (0.25) * commitment term,
            # times the original repo's latent loss scale (10).
            latent_loss = 10.0 * (
                functional.mse_loss(codes, z_e.detach())
                + 0.25 * functional.mse_loss(z_e, codes.detach())
            )
            # Straight-through estimator: decoder gradients pass to z_e.
            quantized = z_e + (codes - z_e).detach()
            return self.decoder(quantized.permute(0, 3, 1, 2)), latent_loss, tokens

    return ReferenceVQVAE()


class ReferenceLoop:
    """AdamW steps of `reference_model` on uint8 NHWC batches, with the
    original's loss: `mean((x - x_hat)^2) / (2 * CIFAR-10 variance)` on
    in-mapped pixels (`x - 0.5`) plus the latent loss."""

    data_variance = 0.06327039811675479

    def __init__(self, n_hid=64, num_embeddings=512, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.threads = torch.get_num_threads()
        self.model = reference_model(n_hid=n_hid, num_embeddings=num_embeddings)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=3e-4, weight_decay=1e-4
        )

    def step(self, batch):
        """One training step on a uint8 NHWC numpy batch; returns the loss."""
        x = self.torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5
        x_hat, latent_loss, _ = self.model(x)
        nll = (x - x_hat).square().mean() / (2 * self.data_variance)
        loss = nll + latent_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def timed_window(self, images, batch_size):
        """Images/s over `images` in batches, from the first step's end to
        the last's (as `timed_fit`)."""
        times = []
        for start in range(0, len(images) - batch_size + 1, batch_size):
            self.step(images[start : start + batch_size])
            times.append(time.perf_counter())
        return (len(times) - 1) * batch_size / (times[-1] - times[0])


# ---------------------------------------------------------------------------
# A worker: one backend (fixed by KERAS_BACKEND), one measurement.


def run_worker(args):
    config = settings(args)
    import keras

    if args.device == "gpu" and args.worker != "pipeline":
        _check_gpu(keras.backend.backend())
    keras.utils.set_random_seed(0)
    if args.policy != "float32":
        keras.mixed_precision.set_dtype_policy(args.policy)
    if args.worker == "pipeline":
        result = measure_pipeline(config)
    elif args.worker == "usage":
        result = measure_usage(config)
    elif args.worker == "fit":
        result = measure_whole_fit(config, args.policy)
    else:
        result = measure_model(args.worker, config, args.device)
    import keras_dvq

    result.update(
        backend=keras.backend.backend(),
        policy=args.policy,
        # The machine is shared: what else ran beside this measurement.
        load_average=os.getloadavg(),
        keras_dvq=os.path.dirname(keras_dvq.__file__),
    )
    with open(args.result, "w") as file:
        json.dump(result, file, indent=2)
    return result


def _check_gpu(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        found = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        found = jax.default_backend() == "gpu"
    else:
        import torch

        found = torch.cuda.is_available()
    if not found:
        raise SystemExit(f"--device gpu: the {backend} backend sees no GPU")


def measure_pipeline(config):
    """Batches per second of `load_dataset("sample", "train")` alone."""
    from keras_dvq.data.datasets import load_dataset

    batch_size = config["batch_size"]
    dataset = load_dataset("sample", "train", batch_size=batch_size, seed=0).repeat()
    iterator = iter(dataset)
    for _ in range(config["pipeline_batches"] // 5):  # warm-up: fills the buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(config["pipeline_batches"]):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"images_per_s": config["pipeline_batches"] * batch_size / seconds}


def sample_images(count, split="train", image_size=32):
    """`count` patches of `sample`, repeated as needed; larger sizes are
    the 32x32 patches scaled up by pixel repetition."""
    import numpy as np

    from keras_dvq.data.sample import load_sample_patches

    images = load_sample_patches(split)
    images = images[np.arange(count) % len(images)]
    scale = image_size // 32
    return images.repeat(scale, axis=1).repeat(scale, axis=2)


def write_image_folder(folder, count):
    """`count` of `sample`'s training patches as PNG files in a new `folder`;
    returns its `folder:` dataset name (every tenth file validates)."""
    from PIL import Image

    os.makedirs(folder)
    for index, image in enumerate(sample_images(count)):
        Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.png"))
    return f"folder:{folder}"


def build_models(name, config):
    """The model and its identity-bottleneck twin, compiled alike."""
    import keras

    from keras_dvq.models import VQVAE
    from keras_dvq.models.vqvae import ENCODER_DECODERS

    flavors = MODELS["deepmind" if name in LARGE else name]
    sizes = {
        "num_embeddings": config["num_embeddings"],
        "embedding_dim": 64,
        "n_hid": config["n_hid"],
    }
    model = VQVAE.from_flavors(**flavors, **sizes)
    encoder_class, decoder_class = ENCODER_DECODERS[flavors["enc_dec_flavor"]]
    twin = VQVAE(
        encoder=encoder_class(n_hid=sizes["n_hid"], name="encoder"),
        quantizer=_identity_bottleneck_class()(
            sizes["num_embeddings"], sizes["embedding_dim"], name="quantizer"
        ),
        decoder=decoder_class(
            n_hid=sizes["n_hid"],
            output_channels=model.decoder.output_channels,
            name="decoder",
        ),
        reconstruction_loss=flavors["loss_flavor"],
    )
    shape = (None, config["image_size"], config["image_size"], 3)
    for m in (model, twin):
        m.build(shape)
        m.compile()
    return model, twin, keras


def _identity_bottleneck_class():
    from keras import ops

    from keras_dvq.layers import Quantizer

    class IdentityBottleneck(Quantizer):
        """The quantizer's 1x1 projection to `embedding_dim`, passed through.

        Tokens are zeros, so the model's usage histogram costs the same as
        with a quantizer: what differs is the code search, lookup, latent
        loss and codebook update.

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

    return IdentityBottleneck


def _step_timer():
    """A callback recording when each training step's logs are ready.

    `async_safe`: on JAX and PyTorch Keras hands the logs to a thread, which
    waits for the step to finish; timing there does not stall the loop.
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    return StepTimer()


def timed_fit(model, images, batch_size):
    """Images/s of one `fit` call, from the first step's end to the last's:
    the call's set-up, its first step and its end are left out."""
    timer = _step_timer()
    model.fit(
        images,
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    times = sorted(timer.times)
    return (len(times) - 1) * batch_size / (times[-1] - times[0])


def timed_encode(model, images, batch_size):
    start = time.perf_counter()
    model.encode(images, batch_size=batch_size)
    return len(images) / (time.perf_counter() - start)


def measure_model(name, config, device):
    config = {**config, "num_embeddings": 512, "image_size": 32}
    if name in LARGE:
        config.update(
            LARGE_SETTINGS["quick" if config["quick"] else "full"],
            num_embeddings=8192,
            image_size=LARGE[name],
            encode_batches=4,
        )
    batch_size, size = config["batch_size"], config["image_size"]
    model, twin, keras = build_models(name, config)
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
    reference = ReferenceLoop(config["n_hid"], config["num_embeddings"])
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
    rows = batch_size * (size // model.encoder.stride) ** 2
    block_rows = min(rows, model.quantizer.search_block_rows)
    train_rate = statistics.median(train)
    identity_rate = statistics.median(identity)
    encode_rate = statistics.median(encode)
    reference_rate = statistics.median(references)
    return {
        "model": name,
        "parameters": model.count_params(),
        "batch_size": batch_size,
        "image_size": size,
        "num_embeddings": config["num_embeddings"],
        # The (rows, codes) float32 distances of one training step, and the
        # part of them that the blocked code search holds at once.
        "distance_matrix_mb": rows * config["num_embeddings"] * 4 / 2**20,
        "distance_block_mb": block_rows * config["num_embeddings"] * 4 / 2**20,
        "train_images_per_s": train_rate,
        "identity_images_per_s": identity_rate,
        # Extra time per image relative to the identity step.
        "quantizer_overhead": identity_rate / train_rate - 1.0,
        "encode_images_per_s": encode_rate,
        "encode_over_train": encode_rate / train_rate,
        "reference_images_per_s": reference_rate,
        "reference_threads": reference.threads,
        "train_over_reference": train_rate / reference_rate,
        "identity_over_reference": identity_rate / reference_rate,
        "windows": {
            "train": train,
            "identity": identity,
            "encode": encode,
            "reference": references,
        },
        "host_round_trips": host_round_trips(model, window[:batch_size]),
        "peak_memory_mb": peak_memory_mb(device),
        "memory_kind": "device peak" if device == "gpu" else "process max RSS",
    }


def _fit_timer():
    """A callback recording the time of every event of a `fit`."""
    import keras

    class FitTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events = []

        def _record(self, name):
            self.events.append((name, time.perf_counter()))

        def on_train_begin(self, logs=None):
            self._record("train_begin")

        def on_train_end(self, logs=None):
            self._record("train_end")

        def on_epoch_begin(self, epoch, logs=None):
            self._record("epoch_begin")

        def on_epoch_end(self, epoch, logs=None):
            self._record("epoch_end")

        def on_train_batch_begin(self, batch, logs=None):
            self._record("train_batch_begin")

        def on_train_batch_end(self, batch, logs=None):
            self._record("train_batch_end")

        def on_test_begin(self, logs=None):
            self._record("test_begin")

        def on_test_end(self, logs=None):
            self._record("test_end")

        def on_test_batch_begin(self, batch, logs=None):
            self._record("test_batch_begin")

        def on_test_batch_end(self, batch, logs=None):
            self._record("test_batch_end")

    return FitTimer()


def fit_timeline(events, batch_size):
    """What a whole `fit` spent its time on, from `FitTimer` events.

    The clock runs from the end of the first training step (compilation and
    k-means initialization left out) to the end of `fit`. `steps_seconds` is
    what the training and validation steps would take at their median
    durations; `fit_over_steps` is the rest (epoch starts, callbacks,
    iterator set-up, stalls) as a fraction of it.
    """

    def times(name):
        return [t for event, t in events if event == name]

    def durations(prefix):
        begins, ends = times(f"{prefix}_begin"), times(f"{prefix}_end")
        return [end - begin for begin, end in zip(begins, ends, strict=True)]

    train_steps = durations("train_batch")
    test_steps = durations("test_batch")
    wall = times("train_end")[-1] - times("train_batch_end")[0]
    timed_train = len(train_steps) - 1
    steps_seconds = timed_train * statistics.median(train_steps)
    if test_steps:
        steps_seconds += len(test_steps) * statistics.median(test_steps)
    # From each epoch's start to its first step's start, and that first
    # step's excess over the median step (a stall inside the iterator).
    # The first epoch's first step compiles: left out.
    epoch_starts, first_step_excess = [], []
    for begin in times("epoch_begin")[1:]:
        following = [i for i, t in enumerate(times("train_batch_begin")) if t > begin]
        if following:
            index = following[0]
            epoch_starts.append(times("train_batch_begin")[index] - begin)
            excess = train_steps[index] - statistics.median(train_steps)
            first_step_excess.append(excess)
    # From each epoch's last step to the next epoch's start (or the end of
    # `fit`), validation left out: the epoch-end callbacks.
    boundaries = times("epoch_begin")[1:] + times("train_end")[-1:]
    validations = durations("test") or [0.0] * len(boundaries)
    epoch_ends = []
    for boundary, validation in zip(boundaries, validations, strict=False):
        last_step = max(t for t in times("train_batch_end") if t < boundary)
        epoch_ends.append(boundary - last_step - validation)
    return {
        "wall_seconds": wall,
        "train_steps": len(train_steps),
        "test_steps": len(test_steps),
        "median_step_seconds": statistics.median(train_steps),
        "median_test_step_seconds": statistics.median(test_steps or [0.0]),
        "steps_seconds": steps_seconds,
        "fit_over_steps": wall / steps_seconds - 1.0,
        "images_per_s": timed_train * batch_size / wall,
        "step_images_per_s": batch_size / statistics.median(train_steps),
        "validation_seconds": durations("test"),
        "epoch_start_seconds": epoch_starts,
        "first_step_excess_seconds": first_step_excess,
        "epoch_end_seconds": epoch_ends,
        # Steps' time above their median (stalls inside steps).
        "in_step_excess_seconds": sum(train_steps[1:])
        - timed_train * statistics.median(train_steps),
        "slowest_steps": [
            (index, train_steps[index])
            for index in sorted(range(1, len(train_steps)), key=train_steps.__getitem__)
        ][-5:],
    }


def measure_whole_fit(config, policy):
    """`scripts/train.py`'s whole training path on `sample` (augmented
    pipeline, validation every epoch, its callbacks and backups), timed by
    a `FitTimer` added to its callbacks, between windows of the reference
    loop in the same process."""
    import importlib.util

    batch_size = config["fit_batch_size"]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    spec = importlib.util.spec_from_file_location("train", path)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    timer = _fit_timer()
    make_callbacks = train.make_callbacks
    train.make_callbacks = lambda *args: make_callbacks(*args) + [timer]

    reference = ReferenceLoop(n_hid=config["n_hid"])
    window = sample_images(config["window_steps"] * config["batch_size"])
    reference.timed_window(window[: 2 * config["batch_size"]], config["batch_size"])
    references = [reference.timed_window(window, config["batch_size"])]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as tmp:
        dataset = "sample"
        if config["fit_folder_images"]:
            dataset = write_image_folder(
                os.path.join(tmp, "images"), config["fit_folder_images"]
            )
        argv = ["--dataset", dataset, "--out", out, "--n_hid", str(config["n_hid"])]
        argv += ["--batch_size", str(batch_size)]
        argv += ["--epochs", str(config["fit_epochs"])]  # full passes
        if policy == "mixed_bfloat16":
            argv.append("--mixed_precision")
        logs = train.train(train.parse_args(argv))
    references.append(reference.timed_window(window, config["batch_size"]))
    timeline = fit_timeline(timer.events, batch_size)
    reference_rate = statistics.median(references)
    return {
        "model": "deepmind",
        "batch_size": batch_size,
        "command": "scripts/train.py " + " ".join(argv[4:]),
        **timeline,
        "reference_images_per_s": reference_rate,
        "reference_batch_size": config["batch_size"],
        "reference_threads": reference.threads,
        "windows": {"reference": references},
        "fit_over_reference": timeline["images_per_s"] / reference_rate,
        "step_over_reference": timeline["step_images_per_s"] / reference_rate,
        "validation": {k: float(v) for k, v in logs.items()},
    }


def measure_usage(config):
    """Codebook usage of the DeepMind VQ-VAE after a short training on
    `sample` (k-means init, as scripts/train.py), on the validation split."""
    from keras_dvq.callbacks.kmeans_init import KMeansInit
    from keras_dvq.models import VQVAE

    batch_size = config["batch_size"]
    steps = config["usage_steps"]
    images = sample_images(steps * batch_size)
    model = VQVAE.from_flavors(n_hid=config["n_hid"])
    model.compile()
    start = time.perf_counter()
    model.fit(
        images,
        batch_size=batch_size,
        epochs=1,
        verbose=0,
        callbacks=[KMeansInit(images[:10_000])],
    )
    seconds = time.perf_counter() - start
    logs = model.evaluate(
        sample_images(4250, "validation"),
        batch_size=batch_size,
        verbose=0,
        return_dict=True,
    )
    return {
        "steps": steps,
        "seconds": seconds,
        "recon_loss": logs["recon_loss"],
        "perplexity": logs["perplexity"],
        "cluster_use": logs["cluster_use"],
    }


def peak_memory_mb(device):
    import keras

    backend = keras.backend.backend()
    if device == "gpu":
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", float("nan")) / 2**20
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def host_round_trips(model, batch, steps=3):
    """Counts what forces the host into a compiled training step.

    TensorFlow: Python callbacks (`py_function` ops) in the step's graph.
    JAX: the step runs under `jax.transfer_guard("disallow")` on device
    data; any host<->device transfer inside it raises. PyTorch (eager): the
    profiler's count of `aten::_local_scalar_dense` (`.item()`, a device to
    host read) per step.
    """
    import keras

    backend = keras.backend.backend()
    model.make_train_function()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None,) + batch.shape[1:], batch.dtype)
        graph = tf.function(model.train_step).get_concrete_function((spec,)).graph
        ops = _tf_op_types(graph)
        py_ops = sum(ops.get(op, 0) for op in PY_FUNCTION_OPS)
        data = iter(tf.data.Dataset.from_tensors((batch,)).repeat())
        calls = _python_calls_into_package(lambda: model.train_function(data), steps)
        return {
            "method": "py_function ops in the step graph + Python calls into "
            "keras_dvq while compiled steps run (sys.setprofile)",
            "per_step": py_ops + calls / steps,
        }
    if backend == "jax":
        import jax

        state = model._get_jax_state(
            trainable_variables=True,
            non_trainable_variables=True,
            optimizer_variables=True,
            metrics_variables=True,
        )
        state = jax.tree_util.tree_map(lambda v: v.copy(), state)
        data = (jax.device_put(batch),)
        try:
            with jax.transfer_guard("disallow"):
                for _ in range(steps):
                    logs, state = model.train_function(state, iter([data]))
            jax.block_until_ready(logs)
            per_step = 0
        except Exception as error:  # the guard raises on a transfer
            return {
                "method": "jax.transfer_guard('disallow')",
                "per_step": 1,
                "error": str(error)[:300],
            }
        return {"method": "jax.transfer_guard('disallow')", "per_step": per_step}
    import torch

    data = (torch.as_tensor(batch),)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as prof:
        for _ in range(steps):
            model.train_function([data])
    reads = sum(
        event.count
        for event in prof.key_averages()
        if event.key == "aten::_local_scalar_dense"
    )
    return {
        "method": "torch.profiler: aten::_local_scalar_dense",
        "per_step": reads / steps,
    }


def _tf_op_types(graph):
    """Op type counts of a graph, its nested functions included."""
    graph_def = graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes += list(function.node_def)
    counts = {}
    for node in nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def _python_calls_into_package(step, steps):
    """Calls of Python functions of keras_dvq while `step()` runs `steps`
    times: a compiled step runs none; a host callback would."""
    package = os.path.dirname(importlib.util.find_spec("keras_dvq").origin)
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls += 1

    step()  # a first call may trace
    sys.setprofile(profile)
    try:
        for _ in range(steps):
            step()
    finally:
        sys.setprofile(None)
    return calls


if __name__ == "__main__":
    sys.exit(main())
