"""Reconstruction grids and codebook-usage charts, as PNG and TensorBoard images.

The pictures are matplotlib figures (`keras_dvq.plots`); TensorBoard gets the
same figures rendered to arrays, written with `tf.summary` (TensorFlow is a
dependency of the package, whatever the Keras backend).
"""

import os

import keras
import numpy as np

from keras_dvq.evaluation import plots


class ReconstructionLogger(keras.callbacks.Callback):
    """Writes a reconstruction grid and a codebook-usage chart.

    At the end of every epoch, encodes `images` and writes into `out_dir`
    `reconstructions.png` (labelled rows: originals above their
    reconstructions, enlarged `scale` times with nearest neighbours) and
    `codebook_usage.png` (code counts on `images` sorted by use, log axis,
    codes used, perplexity and rate in the title), and, with `log_dir`, the
    same pictures as TensorBoard images.

    Args:
        images: uint8 or float images `(N, H, W, C)`; usage is counted on all
            of them, the grid shows `num_shown` spread evenly over them.
        out_dir: directory of the PNG files.
        log_dir: TensorBoard log directory, or `None`.
        num_shown: int. Images in the grid. Defaults to `16`.
        scale: int or `None`. Enlargement of the shown images; `None`: to
            about `SHOWN_SIDE` pixels (4x at 32 px, none from 128 px up: a
            4x grid of 256-px images would hold 8,192 x 4,096 pixels).

    Example:

    ```python
    model.fit(ds, callbacks=[ReconstructionLogger(x_val[:512], "runs/demo")])
    ```
    """

    SHOWN_SIDE = 128

    def __init__(self, images, out_dir, log_dir=None, num_shown=16, scale=None):
        super().__init__()
        self.images = np.asarray(images)
        if scale is None:
            scale = max(1, self.SHOWN_SIDE // self.images.shape[1])
        self.out_dir = out_dir
        self.log_dir = log_dir
        self.num_shown = num_shown
        self.scale = scale
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        self.write(step=epoch)

    def write(self, step=0):
        tokens = self.model.encode(self.images)
        shown = np.linspace(0, len(self.images) - 1, self.num_shown).astype(int)
        originals = self.images[shown]
        if originals.dtype == np.uint8:
            originals = originals / 255.0
        reconstructions = self.model.decode(tokens[shown])
        title = f"after epoch {step + 1}"
        figures = {
            "reconstructions": plots.comparison_figure(
                originals, reconstructions, scale=self.scale, title=title
            ),
            "codebook_usage": plots.codebook_usage_figure(
                np.bincount(
                    tokens.ravel(), minlength=self.model.quantizer.vocabulary_size
                ),
                tokens_per_image=int(np.prod(tokens.shape[1:])),
                title=f"{len(self.images)} validation images, {title}",
            ),
        }
        # Rendered once, for the PNG file and TensorBoard alike.
        pictures = {name: plots.figure_to_array(f) for name, f in figures.items()}
        for name, picture in pictures.items():
            plots.save_picture(picture, os.path.join(self.out_dir, f"{name}.png"))
        if self.log_dir:
            self._summarize(pictures, step)

    def _summarize(self, pictures, step):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "images")
            )
        with self._writer.as_default():
            for name, picture in pictures.items():
                tf.summary.image(name, picture[None], step=step)
        self._writer.flush()


class TrainingCurves(keras.callbacks.Callback):
    """Draws the curves of a `CSVLogger` file after every epoch.

    Reads `metrics_csv` (as written by `keras.callbacks.CSVLogger`, which
    must come earlier in the callback list) and writes `training_curves.png`
    beside it: loss terms, PSNR, perplexity and codes used, training and
    validation, against training steps. An epoch logged twice (a resumed run
    that repeated it) counts once, with its last values.

    Args:
        metrics_csv: path of the CSV file of epoch logs.
        steps_per_epoch: int. Steps of one epoch (the x axis counts steps).
        path: the PNG file. Defaults to `training_curves.png` beside
            `metrics_csv`.
        title: optional figure title.

    Example:

    ```python
    model.fit(ds, epochs=10, steps_per_epoch=150, callbacks=[
        keras.callbacks.CSVLogger("runs/demo/metrics.csv"),
        TrainingCurves("runs/demo/metrics.csv", steps_per_epoch=150),
    ])
    ```
    """

    def __init__(self, metrics_csv, steps_per_epoch, path=None, title=None):
        super().__init__()
        self.metrics_csv = metrics_csv
        self.steps_per_epoch = steps_per_epoch
        self.path = path or os.path.join(
            os.path.dirname(metrics_csv), "training_curves.png"
        )
        self.title = title

    def on_epoch_end(self, epoch, logs=None):
        self.write()

    def write(self):
        rows = read_epoch_logs(self.metrics_csv)
        if rows:
            figure = plots.training_curves_figure(
                rows, self.steps_per_epoch, title=self.title
            )
            plots.save_figure(figure, self.path)


def read_epoch_logs(metrics_csv):
    """The rows of a `CSVLogger` file as dicts, one per epoch (the last row
    of an epoch logged twice), in epoch order; `[]` if there is no file."""
    import csv

    if not os.path.exists(metrics_csv):
        return []
    with open(metrics_csv, newline="") as file:
        by_epoch = {int(row["epoch"]): row for row in csv.DictReader(file)}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
