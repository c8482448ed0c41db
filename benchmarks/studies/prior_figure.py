"""The picture of docs/prior.md: validation patches of one class, their
reconstructions and the prior's samples of that class.

    python -m benchmarks.studies.prior_figure MODEL.keras SAMPLES_DIR CLASS_ID OUT.png

`SAMPLES_DIR` is the `--out` of scripts/sample.py (its `samples.npy`).
"""

import argparse
import os

import keras
import numpy as np

from keras_dvq.data.sample import PHOTOGRAPHS
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.evaluation.plots import image_rows_figure
from keras_dvq.evaluation.plots import save_figure
from keras_dvq.utils import cli

COLUMNS = 8


def class_figure(model, samples, class_id, columns=COLUMNS):
    """Rows of `columns` validation patches of `class_id`, spread over the
    split, their reconstructions by `model` and the first uint8 `samples`."""
    images, labels = load_sample_patches("validation", return_labels=True)
    chosen = np.flatnonzero(labels == class_id)
    chosen = chosen[np.linspace(0, len(chosen) - 1, columns).astype(int)]
    real = images[chosen].astype("float32") / 255.0
    recon = np.clip(model.predict(real, verbose=0), 0.0, 1.0)
    sampled = samples[:columns].astype("float32") / 255.0
    return image_rows_figure(
        [real, recon, sampled],
        ["validation", "reconstructed", "sampled"],
        title=f"class {class_id} ({PHOTOGRAPHS[class_id]}), 32x32 patches",
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("model", help="the tokenizer's .keras file")
    add("samples", help="scripts/sample.py's --out directory (samples.npy)")
    add(
        "class_id",
        type=int,
        choices=range(len(PHOTOGRAPHS)),
        help="a class of `sample`",
    )
    add("out", help="the PNG to write")
    return parser.parse_args(argv)


def draw(args):
    model = keras.saving.load_model(args.model, compile=False)
    samples = np.load(os.path.join(args.samples, "samples.npy"))
    save_figure(class_figure(model, samples, args.class_id), args.out)


def main(argv=None):
    return cli.run("prior_figure.py", parse_args, draw, argv)


if __name__ == "__main__":
    raise SystemExit(main())
