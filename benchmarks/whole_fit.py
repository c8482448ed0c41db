"""A whole training run, timed: the library's training path (`train_tokenizer`,
what scripts/train.py runs) beside its own median step and the reference.

`FitTimer` records every event of the `fit`; `fit_timeline` turns them into
where the time went (steps, validation, epoch starts and ends, stalls).
"""

import statistics
import tempfile
import time

import keras

from benchmarks.data import sample_images
from benchmarks.data import write_image_folder
from benchmarks.reference import ReferenceLoop
from benchmarks.report import fit_ratios


class FitTimer(keras.callbacks.Callback):
    """Records the time of every event of a `fit` in `events`.

    Example:

    ```python
    timer = FitTimer()
    model.fit(images, validation_data=val, epochs=2, callbacks=[timer])
    fit_timeline(timer.events, batch_size=128)["fit_over_steps"]
    ```
    """

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


def fit_command(config, policy):
    """The scripts/train.py flags of the run `measure_whole_fit` times."""
    flags = f"--n_hid {config['n_hid']} --batch_size {config['fit_batch_size']}"
    flags += f" --epochs {config['fit_epochs']}"
    if policy == "mixed_bfloat16":
        flags += " --mixed_precision"
    return "scripts/train.py " + flags


def measure_whole_fit(config, policy):
    """The library's whole training path on `sample` (augmented pipeline,
    validation every epoch, the recipe's callbacks and backups), timed by a
    `FitTimer` among its callbacks, between windows of the reference loop in
    the same process."""
    from keras_dvq.training import TrainingConfig
    from keras_dvq.training import train_tokenizer

    batch_size = config["fit_batch_size"]
    timer = FitTimer()
    reference = ReferenceLoop(n_hid=config["n_hid"])
    window = sample_images(config["window_steps"] * config["batch_size"])
    reference.timed_window(window[: 2 * config["batch_size"]], config["batch_size"])
    references = [reference.timed_window(window, config["batch_size"])]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as tmp:
        dataset = "sample"
        if config["fit_folder_images"]:
            dataset = write_image_folder(f"{tmp}/images", config["fit_folder_images"])
        training = TrainingConfig(
            dataset=dataset,
            out=out,
            n_hid=config["n_hid"],
            batch_size=batch_size,
            epochs=config["fit_epochs"],  # full passes
            mixed_precision=policy == "mixed_bfloat16",
        )
        logs = train_tokenizer(training, callbacks=[timer])
    references.append(reference.timed_window(window, config["batch_size"]))
    timeline = fit_timeline(timer.events, batch_size)
    return {
        "model": "deepmind",
        "batch_size": batch_size,
        "command": fit_command(config, policy),
        **timeline,
        **fit_ratios(timeline, references),
        "reference_batch_size": config["batch_size"],
        "reference_threads": reference.threads,
        "windows": {"reference": references},
        "validation": {k: float(v) for k, v in logs.items()},
    }
