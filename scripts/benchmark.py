"""Training and tokenization throughput of the VQ-VAEs on every backend.

    python scripts/benchmark.py [--backend tensorflow|jax|torch] [--device cpu|gpu]
        [--models deepmind,dalle,vqgan] [--batch_size 128] [--image_size S]
        [--dataset sample|folder:DIR] [--mixed_precision] [--quick]
        [--out benchmark.json]

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
- the input pipeline alone (images/s): `sample` or `--dataset folder:DIR`
  through tf.data at `--image_size` (32 by default), decoding included;
- the reference: a plain PyTorch training loop of the original DeepMind
  VQ-VAE (`benchmarks.reference`, 695,491 parameters, gradient codebook, AdamW,
  the original's loss), timed on the same batches in the same rounds and
  process as each Keras model; every Keras figure is also given as a ratio
  to it, since absolute figures on shared machines move by 2x;
- `--models vqgan`: the network of `recipes/vqgan-small.json` (1,024 codes of
  dimension 8, taming's gradient codebook) at `--image_size` (default 128,
  batch 8), against diffusers' `VQModel` of the same configuration in a plain
  PyTorch loop (squared error + its codebook loss, AdamW); `vqgan_k16384`:
  the same with 16,384 codes (its identity twin gives the large codebook's
  cost);
- a whole `fit` of `scripts/train.py`'s path (`train_tokenizer`: the
  `sample` pipeline with augmentation, validation every epoch, its
  callbacks and backups; 2 epochs) beside its own median step, between
  reference windows: images/s, the ratio to the reference, and how far the
  whole `fit` runs over the time of its training and validation steps
  (epoch starts, callbacks, stalls; `fit_over_steps`).

The measurements live in the `benchmarks` package at the repository root (one
module per job); this runner launches them and prints the report.

Writes the results as JSON (`--out`) and prints a table. `--mixed_precision`
adds the DeepMind model under `mixed_bfloat16` (throughput, and the codebook
usage after a short training against float32). `--quick` is a smoke run with
tiny sizes (used by the tests); its figures mean nothing.
"""

import argparse
import importlib.util
import os
import sys

# `benchmarks` sits beside the library at the repository root, not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.config import BACKENDS  # noqa: E402
from benchmarks.config import LARGE  # noqa: E402
from benchmarks.config import MODELS  # noqa: E402
from benchmarks.config import positive_int  # noqa: E402
from benchmarks.config import settings  # noqa: E402
from benchmarks.report import failures  # noqa: E402
from benchmarks.report import format_table  # noqa: E402
from benchmarks.report import machine_info  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from benchmarks.run import launch  # noqa: E402
from keras_dvq.utils import cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--backend", default=None, help="comma-separated; default: all installed")
    add("--device", choices=["cpu", "gpu"], default="cpu")
    add(
        "--models",
        default="deepmind,dalle",
        help="comma-separated: deepmind,dalle,vqgan,vqgan_k16384,deepmind_k8192_64,"
        "deepmind_k8192_128",
    )
    add(
        "--batch_size",
        type=positive_int,
        help="of the 32-px models and the pipeline: default 128 (8 with --quick)",
    )
    add(
        "--image_size",
        type=positive_int,
        help="images of deepmind, dalle, vqgan and the pipeline (default: 32, "
        "vqgan 128); sample cuts patches of 16-256 px",
    )
    add("--dataset", default=None, help="the pipeline's: sample or folder:DIR")
    add("--rounds", type=positive_int, help="timed windows per configuration")
    add("--mixed_precision", action="store_true", help="also mixed_bfloat16")
    add("--quick", action="store_true", help="tiny smoke run; figures mean nothing")
    add("--out", default="benchmark.json", help="JSON results")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS) - set(LARGE)
    if unknown:
        choices = list(MODELS) + list(LARGE)
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {choices}")
    unknown = set((args.backend or "tensorflow").split(",")) - set(BACKENDS)
    if unknown:
        parser.error(f"--backend: unknown {sorted(unknown)}; choose from {BACKENDS}")
    return args


def tasks(models, mixed_precision):
    """The `(result key, task, policy)` measurements of one backend."""
    planned = [(model, model, "float32") for model in models]
    if "deepmind" in models:
        planned.append(("fit", "fit", "float32"))
    if mixed_precision and "deepmind" in models:
        planned.append(("deepmind_mixed_bfloat16", "deepmind", "mixed_bfloat16"))
        planned.append(("fit_mixed_bfloat16", "fit", "mixed_bfloat16"))
        planned += [(f"usage_{p}", "usage", p) for p in ("float32", "mixed_bfloat16")]
    return planned


class MeasurementsFailed(RuntimeError):
    """Some measurements ended in an error (each is in the report)."""


def benchmark(args):
    backends = args.backend.split(",") if args.backend else installed_backends()
    models = args.models.split(",")
    config = settings(args.quick, args.batch_size, args.rounds, args.image_size)
    report = {
        "machine": machine_info(args.device),
        "settings": {
            **config,
            "device": args.device,
            "quick": args.quick,
            "dataset": args.dataset,
        },
        "pipeline": launch(args, "tensorflow", "pipeline"),
        "backends": {},
    }
    for backend in backends:
        results = report["backends"][backend] = {}
        for key, task, policy in tasks(models, args.mixed_precision):
            results[key] = launch(args, backend, task, policy)
            write_report(report, args.out)  # what is measured survives a kill
    report["machine"]["load_average_after"] = os.getloadavg()
    write_report(report, args.out)
    print(format_table(report))
    print(f"\nWrote {args.out}")
    failed = failures(report)
    if failed:
        raise MeasurementsFailed(
            f"{len(failed)} measurement(s) failed, the first: {failed[0]} "
            f"(all in {args.out})"
        )


def main(argv=None):
    return cli.run(
        "benchmark.py",
        parse_args,
        benchmark,
        argv,
        outcomes={MeasurementsFailed: (1, lambda args, error: str(error))},
    )


def installed_backends():
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


if __name__ == "__main__":
    sys.exit(main())
