"""benchmarks.whole_fit: where a whole `fit`'s time went, from its events."""

import pytest

from benchmarks.whole_fit import FitTimer
from benchmarks.whole_fit import fit_command
from benchmarks.whole_fit import fit_timeline

# Arithmetic on recorded times: nothing backend-specific.
pytestmark = pytest.mark.backend_independent


def fit_events(step_seconds, waits=(0.0, 0.0), test_steps=2, epoch_end=0.0):
    """The events of a `fit` of `len(waits)` epochs: each epoch waits
    `waits[epoch]` before its first step, runs steps of `step_seconds`
    (a list per epoch, or one duration for 3 steps), validates in
    `test_steps` steps of 0.5 s, then spends `epoch_end` in callbacks."""
    events, now = [("train_begin", 0.0)], 0.0

    def add(name, seconds=0.0):
        nonlocal now
        now += seconds
        events.append((name, now))

    for epoch, wait in enumerate(waits):
        steps = step_seconds[epoch] if isinstance(step_seconds, list) else [1.0] * 3
        add("epoch_begin")
        add("train_batch_begin", wait)
        for index, seconds in enumerate(steps):
            if index:
                add("train_batch_begin")
            add("train_batch_end", seconds)
        add("test_begin")
        for _ in range(test_steps):
            add("test_batch_begin")
            add("test_batch_end", 0.5)
        add("test_end")
        add("epoch_end", epoch_end)
    add("train_end")
    return events


def test_fit_timeline_separates_steps_from_stalls():
    # Two epochs of three 1 s steps, 0.5 s test steps; the second epoch waits
    # 4 s before its first step.
    timeline = fit_timeline(fit_events(1.0, waits=(0.0, 4.0)), batch_size=10)
    assert timeline["train_steps"] == 6 and timeline["test_steps"] == 4
    # From the first step's end: 5 steps, 4 test steps and the 4 s wait.
    assert timeline["wall_seconds"] == pytest.approx(5 + 2 + 4)
    assert timeline["steps_seconds"] == pytest.approx(5 + 2)
    assert timeline["fit_over_steps"] == pytest.approx(4 / 7)
    assert timeline["epoch_start_seconds"] == pytest.approx([4.0])
    assert timeline["images_per_s"] == pytest.approx(50 / 11)
    assert timeline["step_images_per_s"] == pytest.approx(10.0)
    assert timeline["validation_seconds"] == pytest.approx([1.0, 1.0])
    assert timeline["epoch_end_seconds"] == pytest.approx([0.0, 0.0])
    assert timeline["in_step_excess_seconds"] == pytest.approx(0.0)


def test_slow_epoch_end_callbacks_count_outside_validation():
    timeline = fit_timeline(fit_events(1.0, epoch_end=0.75), batch_size=10)
    # Validation is measured on its own; the 0.75 s after it is the
    # callbacks', in both epochs.
    assert timeline["epoch_end_seconds"] == pytest.approx([0.75, 0.75])
    assert timeline["validation_seconds"] == pytest.approx([1.0, 1.0])
    assert timeline["fit_over_steps"] == pytest.approx(1.5 / 7)


def test_a_stall_inside_a_step_is_excess_over_the_median():
    # The first step compiles (9 s): left out of the wall clock and excess.
    steps = [[9.0, 1.0, 1.0], [3.0, 1.0, 1.0]]
    timeline = fit_timeline(fit_events(steps, waits=(0.0, 0.5)), batch_size=10)
    assert timeline["median_step_seconds"] == pytest.approx(1.0)
    # The second epoch's first step (3 s) stalls 2 s inside the iterator,
    # after 0.5 s from the epoch's start to the step's.
    assert timeline["epoch_start_seconds"] == pytest.approx([0.5])
    assert timeline["first_step_excess_seconds"] == pytest.approx([2.0])
    assert timeline["in_step_excess_seconds"] == pytest.approx(2.0)
    assert timeline["wall_seconds"] == pytest.approx(7 + 2 + 0.5)
    # The slowest steps last, compilation (step 0) never among them.
    assert timeline["slowest_steps"][-1] == (3, pytest.approx(3.0))
    assert all(index > 0 for index, _ in timeline["slowest_steps"])


def test_fit_without_validation_has_no_test_time():
    timeline = fit_timeline(fit_events(1.0, test_steps=0), batch_size=10)
    assert timeline["test_steps"] == 0
    assert timeline["median_test_step_seconds"] == 0.0
    assert timeline["steps_seconds"] == pytest.approx(5.0)


def test_fit_timer_records_every_event_of_a_fit_in_order():
    timer = FitTimer()
    for name in ("train_begin", "epoch_begin", "train_batch_begin"):
        getattr(timer, f"on_{name}")(*([0] if name != "train_begin" else []))
    names = [name for name, _ in timer.events]
    assert names == ["train_begin", "epoch_begin", "train_batch_begin"]
    times = [t for _, t in timer.events]
    assert times == sorted(times)


def test_fit_command_names_the_train_py_flags_it_stands_for():
    config = {"n_hid": 8, "fit_batch_size": 16, "fit_epochs": 2}
    assert fit_command(config, "float32") == (
        "scripts/train.py --n_hid 8 --batch_size 16 --epochs 2"
    )
    assert fit_command(config, "mixed_bfloat16").endswith(" --mixed_precision")
