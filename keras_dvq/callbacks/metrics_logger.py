"""`MetricsLogger`: one CSV row per epoch, rewritten atomically; a resumed run
replaces the rows of the epochs it repeats, so every epoch appears once.
"""

import csv
import io
import os

import keras

from keras_dvq.utils import atomic


class MetricsLogger(keras.callbacks.Callback):
    """Writes the epoch logs to a CSV file, one row per epoch.

    The file is rewritten atomically after every epoch. With `append=True`
    the rows of an earlier run are kept up to the first epoch this run
    trains: epochs that a resumed run repeats replace their old rows, so
    each epoch appears once. Columns: `epoch`, then the log keys sorted.

    Args:
        path: the CSV file.
        append: bool. Continue the file of an earlier (interrupted) run.

    Example:

    ```python
    model.fit(x, epochs=4, callbacks=[MetricsLogger("metrics.csv")])
    ```
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path = os.fspath(path)
        self.append = append
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is not None:
            return
        self.rows = []
        if self.append and os.path.exists(self.path):
            with open(self.path, newline="") as file:
                self.rows = [
                    row for row in csv.DictReader(file) if int(row["epoch"]) < epoch
                ]

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if int(row["epoch"]) != epoch]
        self.rows.append({"epoch": epoch, **(logs or {})})
        keys = sorted({key for row in self.rows for key in row} - {"epoch"})
        text = io.StringIO()
        writer = csv.DictWriter(text, ["epoch", *keys], restval="NA")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, text.getvalue())
