"""The cost of the adversarial training step against the plain one, in one
process: `VQVAE` and `AdversarialVQVAE` with discriminators of given widths.

    python -m benchmarks.studies.adversarial_cost [--ndf 64,32,16]
        [--disc_layers 2] [--batch_size 128] [--image_size 32] [--steps 8]
        [--rounds 3]

Each model is the default tokenizer (DeepMind network, 512 codes) as
`train.py` builds it, the adversarial ones with the recipe's discriminator
(`--disc_layers`) at each `--ndf`, trained from step 0 (`disc_start` 0:
both players update in every timed step). Random images; each model fits
`--steps` steps per round, the models interleaved round after round, so that
a change of the machine's load hits all of them alike. A model's time is its
best round's seconds per step, from the end of its first step to the end of
its last (`benchmarks.throughput.timed_fit`), and its cost is that time over
the plain model's. Prints one line per model and the load average.
docs/vqgan.md reads it.
"""

import argparse
import os

import numpy as np

from keras_dvq.training.flags import int_list
from keras_dvq.utils import cli


def build_models(ndfs, disc_layers):
    """`{"plain": VQVAE, "ndf N": AdversarialVQVAE, ...}`, compiled as
    `train.py` compiles them (the adversarial settings from
    `TrainingConfig.adversarial_options`, weighing in from step 0)."""
    from keras_dvq.training.builders import build_model
    from keras_dvq.training.config import TrainingConfig

    models = {"plain": build_model()}
    for ndf in ndfs:
        config = TrainingConfig(
            out="unused", disc_weight=0.01, disc_layers=disc_layers, disc_ndf=ndf
        )
        adversarial = config.adversarial_options()
        models[f"ndf {ndf}"] = build_model(adversarial=adversarial)
    return models


def measure(models, images, batch_size, rounds):
    """`{name: best seconds per step}` over `rounds` interleaved rounds."""
    from benchmarks.throughput import timed_fit

    for model in models.values():  # traces and builds outside the timing
        model.fit(images[: 2 * batch_size], batch_size=batch_size, verbose=0)
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            rate = timed_fit(model, images, batch_size)
            seconds[name].append(batch_size / rate)
    return {name: min(values) for name, values in seconds.items()}


def run_study(args):
    models = build_models(args.ndf, args.disc_layers)
    shape = (args.batch_size * args.steps, args.image_size, args.image_size, 3)
    images = np.random.default_rng(0).uniform(size=shape).astype("float32")
    seconds = measure(models, images, args.batch_size, args.rounds)
    base = seconds["plain"]
    for name, value in seconds.items():
        print(f"{name}: {value * 1000:.0f} ms per step, x{value / base:.2f}")
    print("load average: " + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
    return seconds


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--ndf",
        type=int_list,
        default=(64, 32, 16),
        help="discriminator widths, comma-separated",
    )
    parser.add_argument("--disc_layers", type=cli.positive_int, default=2)
    parser.add_argument("--batch_size", type=cli.positive_int, default=128)
    parser.add_argument("--image_size", type=cli.positive_int, default=32)
    parser.add_argument(
        "--steps", type=cli.positive_int, default=8, help="timed steps per round"
    )
    parser.add_argument("--rounds", type=cli.positive_int, default=3)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps: at least 2 (a window of steps), got {args.steps}")
    return args


def main(argv=None):
    return cli.run("adversarial_cost", parse_args, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
