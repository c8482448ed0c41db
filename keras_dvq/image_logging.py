"""Reconstruction grids and codebook-usage charts, as PNG and TensorBoard images.

PNG files are written with Pillow; TensorBoard images with `tf.summary`
(TensorFlow is a dependency of the package, whatever the Keras backend).
"""

import os

import keras
import numpy as np


def image_grid(rows, columns=None):
    """Tiles a list of equally sized image batches `(N, H, W, C)` in [0, 1]
    into one uint8 image: one batch per row of the grid, 1-pixel gaps."""
    rows = [np.asarray(batch)[:columns] for batch in rows]
    count, height, width, _ = rows[0].shape
    grid = np.ones((len(rows) * (height + 1) - 1, count * (width + 1) - 1, 3))
    for r, batch in enumerate(rows):
        for c, image in enumerate(batch):
            y, x = r * (height + 1), c * (width + 1)
            grid[y : y + height, x : x + width] = image[..., :3]
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def usage_chart(counts, height=200):
    """A bar chart (uint8 RGB) of code usage counts sorted in decreasing
    order, one 2-pixel bar per code; unused codes show as a red baseline."""
    counts = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    chart = np.full((height, 2 * len(counts), 3), 255, dtype=np.uint8)
    bar_heights = np.ceil(counts / max(counts.max(), 1) * (height - 1)).astype(int)
    for k, bar in enumerate(bar_heights):
        columns = slice(2 * k, 2 * k + 2)
        if bar == 0:
            chart[-1, columns] = (200, 0, 0)
        else:
            chart[height - bar :, columns] = (40, 90, 160)
    return chart


def save_png(image, path):
    from PIL import Image

    Image.fromarray(image).save(path)


class ReconstructionLogger(keras.callbacks.Callback):
    """Writes a reconstruction grid and a codebook-usage chart.

    At the end of every epoch (and of training), encodes `images`, writes
    `reconstructions.png` (originals above reconstructions) and
    `codebook_usage.png` (codes sorted by use on `images`) into `out_dir`,
    and, with `log_dir`, the same pictures as TensorBoard images.

    Args:
        images: uint8 or float images `(N, H, W, C)`; usage is counted on all
            of them, the grid shows `num_shown` spread evenly over them.
        out_dir: directory of the PNG files.
        log_dir: TensorBoard log directory, or `None`.
        num_shown: int. Images in the grid. Defaults to `16`.

    Example:

    ```python
    model.fit(ds, callbacks=[ReconstructionLogger(x_val[:512], "runs/demo")])
    ```
    """

    def __init__(self, images, out_dir, log_dir=None, num_shown=16):
        super().__init__()
        self.images = np.asarray(images)
        self.out_dir = out_dir
        self.log_dir = log_dir
        self.num_shown = num_shown
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        self.write(step=epoch)

    def write(self, step=0):
        tokens = self.model.encode(self.images)
        shown = np.linspace(0, len(self.images) - 1, self.num_shown).astype(int)
        originals = self.images[shown]
        if originals.dtype == np.uint8:
            originals = originals / 255.0
        grid = image_grid([originals, self.model.decode(tokens[shown])])
        counts = np.bincount(
            tokens.ravel(), minlength=self.model.quantizer.num_embeddings
        )
        chart = usage_chart(counts)
        os.makedirs(self.out_dir, exist_ok=True)
        save_png(grid, os.path.join(self.out_dir, "reconstructions.png"))
        save_png(chart, os.path.join(self.out_dir, "codebook_usage.png"))
        if self.log_dir:
            self._summarize({"reconstructions": grid, "codebook_usage": chart}, step)

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
