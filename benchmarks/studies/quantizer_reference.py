"""FSQ, LFQ and VQ of vector-quantize-pytorch in the original's PyTorch loop.

    python -m benchmarks.studies.quantizer_reference --quantizer fsq|lfq|vq \\
        [--steps 1500] [--seed 0] [--normalize_inputs] [--threads N] [--out DIR]

Is the gap between keras-dvq's FSQ/LFQ and its VQ on `sample` the method's, or
ours? This trains the DeepMind encoder/decoder of `benchmarks.reference` (the
original repo's model as a plain `torch.nn.Module`) with a quantizer of
vector-quantize-pytorch in place of its VQ layer: the encoder and its 1x1
projection to 64 channels, then the library's quantizer on the 64 numbers of
each position (FSQ and LFQ project in to their few dimensions and out to 64
again with their own linear layers, as the library's users run them), then the
decoder. Everything else is `scripts/train.py`'s run on `sample`: its training
pipeline (shuffle and augmentation, seeded), batch 128, AdamW with weight
decay 1e-4 on the weights (not on biases or codebooks) and the learning
rate's cosine decay from 3e-4 over the run's steps (`--lr_decay run`), the
loss `mean((x - x_hat)^2) / (2 * CIFAR-10 variance)` plus the quantizer's
auxiliary loss. The quantizers:

- `fsq`: `FSQ(levels=8,5,5,5)`, library defaults (no normalization before
  the bound, no auxiliary loss);
- `lfq`: `LFQ(codebook_size=1024)`, library defaults (entropy weight 0.1,
  diversity gamma 1, commitment weight 0, inverse temperature 100);
- `vq`: `VectorQuantize(codebook_size=1024, kmeans_init=True)` with EMA decay
  0.99, commitment weight 2.5 (the original's 10 x 0.25) and dead codes
  replaced below an EMA count of 1, as keras-dvq's `vq` flavor.

It prints the validation PSNR every epoch (150 steps) and, at the end, the
yardstick of `keras_dvq.evaluation` on the whole validation split (mean of
per-image PSNRs of the reconstruction clipped to [0, 1], SSIM, codes used,
bits per token and per image), and writes it to `DIR/result.json` with the
settings and the per-epoch PSNRs. vector-quantize-pytorch is an optional
dependency: `pip install "keras-dvq[study]"`.
"""

import argparse
import json
import math
import os
import time

import numpy as np

from benchmarks.reference import ReferenceLoop
from benchmarks.reference import reference_model
from keras_dvq.data.datasets import load_dataset
from keras_dvq.evaluation.measures import SplitEvaluation
from keras_dvq.schedules import cosine_anneal
from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput

QUANTIZERS = ("fsq", "lfq", "vq")
EMBEDDING_DIM = 64  # the reference model's projection, the quantizers' input
STEPS_PER_EPOCH = 150  # train.py's epochs of a 1,500-step run on `sample`
END_LEARNING_RATE = 1.25e-6  # the original's cosine decay ends there
WEIGHT_DECAY = 1e-4


def vector_quantize_pytorch():
    """The library, or `BadInput` saying how to install it."""
    try:
        import vector_quantize_pytorch
    except ImportError as error:
        raise BadInput(
            "--quantizer needs vector-quantize-pytorch, which is not installed: "
            'pip install "keras-dvq[study]"'
        ) from error
    return vector_quantize_pytorch


def make_quantizer(name, levels=(8, 5, 5, 5), codebook_size=1024):
    """The library's quantizer `name` on `EMBEDDING_DIM` numbers per position;
    returns it and its number of codes."""
    library = vector_quantize_pytorch()
    if name == "fsq":
        return library.FSQ(levels=list(levels), dim=EMBEDDING_DIM), math.prod(levels)
    if name == "lfq":
        return library.LFQ(dim=EMBEDDING_DIM, codebook_size=codebook_size), (
            codebook_size
        )
    if name == "vq":
        quantizer = library.VectorQuantize(
            dim=EMBEDDING_DIM,
            codebook_size=codebook_size,
            kmeans_init=True,
            decay=0.99,
            commitment_weight=2.5,
            threshold_ema_dead_code=1,
        )
        return quantizer, codebook_size
    raise BadInput(f"--quantizer: expected one of {QUANTIZERS}, got {name!r}")


def quantized_model(quantizer, n_hid=64, normalize_inputs=False):
    """`benchmarks.reference`'s model with `quantizer` in place of its VQ
    layer; `model(x)` on NCHW images in [-0.5, 0.5] returns the
    reconstruction, the auxiliary loss and the `(N, h, w)` token ids.
    `normalize_inputs` standardizes each position's 64 numbers (a layer norm
    without scale or offset) before the quantizer projects them in, as
    `--normalize_features` does in keras-dvq."""
    import torch
    from torch import nn

    base = reference_model(n_hid=n_hid, embedding_dim=EMBEDDING_DIM)
    normalize = nn.Identity()
    if normalize_inputs:
        normalize = nn.LayerNorm(EMBEDDING_DIM, elementwise_affine=False)

    class QuantizedReference(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = base.encoder
            self.projection = base.projection
            self.normalize = normalize
            self.quantizer = quantizer
            self.decoder = base.decoder

        def forward(self, x):
            z_e = self.projection(self.encoder(x)).permute(0, 2, 3, 1)
            z_e = self.normalize(z_e)
            batch, height, width, channels = z_e.shape
            out = self.quantizer(z_e.reshape(batch, height * width, channels))
            quantized, tokens = out[0], out[1]
            # FSQ has no auxiliary loss; LFQ and VectorQuantize return one
            # (LFQ's is zero outside training).
            aux_loss = out[2] if len(out) > 2 else torch.zeros(())
            quantized = quantized.reshape(batch, height, width, channels)
            x_hat = self.decoder(quantized.permute(0, 3, 1, 2))
            return x_hat, aux_loss.sum(), tokens.reshape(batch, height, width)

    return QuantizedReference()


def optimizer_of(model, learning_rate):
    """AdamW, weight decay on the weights only (as `VQVAE.compile`, which
    excludes biases and codebooks)."""
    import torch

    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_weight = parameter.ndim > 1 and "codebook" not in name
        (decayed if is_weight else plain).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": WEIGHT_DECAY},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def to_torch(batch):
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()


def evaluate(model, vocabulary_size, batch_size=250):
    """The yardstick on the whole `sample` validation split."""
    import torch

    split = SplitEvaluation(vocabulary_size)
    model.eval()
    with torch.no_grad():
        for batch in load_dataset("sample", "validation", batch_size):
            images = batch.numpy()
            x_hat, _, tokens = model(to_torch(images) / 255 - 0.5)
            pixels = (x_hat + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            split.update(images, pixels, tokens.long().numpy())
    model.train()
    return split.result()


def train(args):
    """Trains one reference model; returns its result dict."""
    import torch

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    quantizer, vocabulary_size = make_quantizer(
        args.quantizer, args.levels, args.codebook_size
    )
    model = quantized_model(
        quantizer, n_hid=args.n_hid, normalize_inputs=args.normalize_inputs
    )
    optimizer = optimizer_of(model, args.learning_rate)
    data = load_dataset("sample", "train", args.batch_size, seed=args.seed)
    batches = iter(data.repeat())
    epochs = []
    start = time.perf_counter()
    for step in range(args.steps):
        rate = cosine_anneal(step, args.learning_rate, END_LEARNING_RATE, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        x = to_torch(next(batches).numpy()) / 255 - 0.5
        x_hat, aux_loss, _ = model(x)
        nll = (x - x_hat).square().mean() / (2 * ReferenceLoop.data_variance)
        loss = nll + aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss diverged at step {step}")
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            result = evaluate(model, vocabulary_size)
            epochs.append({"step": done, "val_psnr": result["psnr"]})
            print(
                f"step {done}: loss {loss:.4f}, val PSNR "
                f"{result['psnr']:.2f} dB, codes used {result['codes_used']}, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return {
        "quantizer": args.quantizer,
        "settings": {
            key: getattr(args, key)
            for key in (
                "steps",
                "batch_size",
                "seed",
                "n_hid",
                "learning_rate",
                "levels",
                "codebook_size",
                "normalize_inputs",
                "threads",
            )
        },
        "library_version": library_version(),
        "epochs": epochs,
        "validation": result,
    }


def library_version():
    from importlib.metadata import version

    return version("vector-quantize-pytorch")


def levels_list(text):
    try:
        levels = tuple(int(value) for value in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 3:
        # The library asks for preserve_symmetry with a level of 2.
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 3, got {text!r}"
        )
    return levels


def power_of_two(text):
    value = cli.positive_int(text)
    if value < 2 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"expected a power of 2 >= 2, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quantizer", choices=QUANTIZERS, required=True)
    parser.add_argument("--steps", type=cli.positive_int, default=1500)
    parser.add_argument("--batch_size", type=cli.positive_int, default=128)
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--n_hid", type=cli.positive_int, default=64)
    parser.add_argument("--learning_rate", type=cli.positive_float, default=3e-4)
    parser.add_argument("--levels", type=levels_list, default=(8, 5, 5, 5))
    parser.add_argument(
        "--codebook_size",
        type=power_of_two,
        default=1024,
        help="codes of lfq and vq (a power of 2)",
    )
    parser.add_argument(
        "--normalize_inputs",
        action="store_true",
        help="standardize each position's numbers (no scale or offset) before "
        "the quantizer, as --normalize_features does in train.py",
    )
    parser.add_argument(
        "--eval_every",
        type=cli.positive_int,
        default=STEPS_PER_EPOCH,
        help="steps between validation PSNRs",
    )
    parser.add_argument(
        "--threads",
        type=cli.positive_int,
        help="PyTorch's intra-op threads (default: its own choice); on a "
        "shared machine 1 can be several times faster",
    )
    parser.add_argument("--out", help="directory for result.json")
    return parser.parse_args(argv)


def run_study(args):
    vector_quantize_pytorch()  # fails fast, before the data is loaded
    result = train(args)
    validation = result["validation"]
    print(
        f"{args.quantizer}: PSNR {validation['psnr']:.2f} dB, SSIM "
        f"{validation['ssim']:.4f}, codes used {validation['codes_used']} / "
        f"{validation['vocabulary_size']}, {validation['bits_per_token']:.2f} "
        f"bits/token, {validation['bits_per_image']:.0f} bits/image"
    )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "result.json"), "w") as file:
            json.dump(result, file, indent=2)
    return result


def main(argv=None):
    return cli.run("quantizer_reference.py", parse_args, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
