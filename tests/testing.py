"""A slim replacement for Keras' private test case, plus a gradient helper.

`run_layer_test` checks what every layer of the package must support: a
config round-trip, eager and symbolic calls with the expected shapes, one
`fit` step and a `.keras` save/load with identical outputs. `gradients`
differentiates a closure with respect to Keras variables on TensorFlow, JAX
and PyTorch alike. `run_script` / `run_script_process` run a script's
`main` in this process or a fresh one, and `assert_one_line_error` checks a
bad-input exit. The shared trained files (tokenizer, shards, prior) are
session fixtures in conftest.py.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
from keras import ops


def random_inputs(shape, dtype="float32", seed=0):
    """Uniform [0, 1) floats (or ints in [0, 8)) of a fully defined shape."""
    rng = np.random.default_rng(seed)
    if "int" in dtype:
        return rng.integers(0, 8, size=shape).astype(dtype)
    return rng.uniform(size=shape).astype(dtype)


def image_folder(root, count=40, images=None):
    """Writes `count` random 32x32 PNGs (or the uint8 `images`) into a new
    folder `root`; returns the `folder:` dataset name (every 10th file
    validates: 36 train, 4 validation images for the default count)."""
    from PIL import Image

    if images is None:
        rng = np.random.default_rng(0)
        images = (
            rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(count)
        )
    root.mkdir()
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(root / f"{index:04d}.png")
    return f"folder:{root}"


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    *,
    tmp_path,
    expected_num_trainable_weights=None,
    run_fit=True,
):
    """Checks a layer class on inputs of `input_shape` (batch size included).

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_shape: full input shape, e.g. `(2, 8, 8, 3)`.
        expected_output_shape: the output shape, or a tuple of shapes for a
            layer with several outputs.
        tmp_path: a folder for the `.keras` file (pytest's `tmp_path`).
        expected_num_trainable_weights: int or `None` to skip the check.
        run_fit: whether to train a model around the layer for one step.

    Returns:
        The eagerly called layer, for further checks.
    """
    expected = _shape_list(expected_output_shape)

    # Config round-trip.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"get_config() lacks constructor argument {key!r}"
        if isinstance(value, (bool, int, float, str, tuple)):
            assert config[key] == value, (key, config[key], value)
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config

    # Eager call.
    inputs = random_inputs(input_shape)
    outputs = layer(inputs)
    assert _shapes_of(outputs) == expected
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Symbolic call and shape inference, with an unknown batch size.
    symbolic_shape = (None,) + tuple(input_shape[1:])
    symbolic_expected = [(None,) + shape[1:] for shape in expected]
    symbolic = layer_cls(**init_kwargs)(keras.KerasTensor(symbolic_shape))
    assert _shapes_of(symbolic) == symbolic_expected
    inferred = layer_cls(**init_kwargs).compute_output_shape(symbolic_shape)
    assert _shape_list(inferred) == symbolic_expected

    # A functional model around a fresh layer.
    model_inputs = keras.Input(input_shape[1:])
    model = keras.Model(model_inputs, layer_cls(**init_kwargs)(model_inputs))
    if run_fit:
        _fit_one_step(model, inputs)

    # `.keras` save/load: same weights, same outputs.
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == len(model.weights)
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(saved), ops.convert_to_numpy(restored)
        )
    for before, after in zip(
        keras.tree.flatten(model(inputs)),
        keras.tree.flatten(loaded(inputs)),
        strict=True,
    ):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(before), ops.convert_to_numpy(after)
        )
    return layer


def _fit_one_step(model, inputs):
    """Fits the first float output to zeros for one step; weights must move."""
    float_outputs = [
        output
        for output in keras.tree.flatten(model.outputs)
        if keras.backend.is_float_dtype(output.dtype)
    ]
    trainer = keras.Model(model.inputs, float_outputs[0])
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [ops.convert_to_numpy(v) for v in trainer.trainable_weights]
    target = np.zeros(
        (len(inputs),) + tuple(trainer.outputs[0].shape[1:]), dtype="float32"
    )
    history = trainer.fit(inputs, target, batch_size=len(inputs), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(v) for v in trainer.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def _shapes_of(outputs):
    return [tuple(output.shape) for output in keras.tree.flatten(outputs)]


def _shape_list(shapes):
    shapes = tuple(shapes)
    if shapes and isinstance(shapes[0], (tuple, list)):
        return [tuple(shape) for shape in shapes]
    return [shapes]


def gradients(fn, variables):
    """Gradients of the scalar `fn()` with respect to Keras variables.

    `fn` takes no argument and reads the variables (directly or through
    layers). Non-trainable variables are differentiated too. Assignments that
    `fn` makes to variables stay in effect on TensorFlow and PyTorch and are
    discarded on JAX, so keep `fn` free of state updates (call layers with
    `training=False`) when that matters.

    Returns:
        A list of NumPy arrays, zeros where a variable does not reach `fn()`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        grads = _tensorflow_gradients(fn, variables)
    elif backend == "jax":
        grads = _jax_gradients(fn, variables)
    elif backend == "torch":
        grads = _torch_gradients(fn, variables)
    else:
        raise NotImplementedError(f"No gradient helper for backend {backend!r}")
    return [
        np.zeros(tuple(v.shape), "float32")
        if g is None
        else np.asarray(ops.convert_to_numpy(g), "float32")
        for v, g in zip(variables, grads, strict=True)
    ]


def _tensorflow_gradients(fn, variables):
    import tensorflow as tf

    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for variable in variables:
            tape.watch(variable.value)
        value = fn()
    return tape.gradient(value, [variable.value for variable in variables])


def _jax_gradients(fn, variables):
    import jax

    def pure(values):
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            return fn()

    return jax.grad(pure)([variable.value for variable in variables])


def _torch_gradients(fn, variables):
    import torch

    params = [variable.value for variable in variables]
    flags = [param.requires_grad for param in params]
    for param in params:
        param.requires_grad_(True)
    try:
        value = fn()
        return torch.autograd.grad(value, params, allow_unused=True)
    finally:
        for param, flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)


def assert_same_tokens(actual, expected, model, images, rtol=1e-5):
    """Tokens from another runtime (a SavedModel, another backend) equal the
    model's own, except at near-ties: positions whose two codes lie at equal
    distances (relative gap below `rtol`) from the encoder output, which
    different float kernels may break either way."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    differ = actual != expected
    if not differ.any():
        return
    assert differ.mean() < 1e-4, f"{differ.sum()} of {differ.size} tokens differ"
    features = model.project(images)[differ]
    codebook = ops.convert_to_numpy(model.quantizer.codebook)
    distance = np.sum((features - codebook[actual[differ]]) ** 2, axis=-1)
    other = np.sum((features - codebook[expected[differ]]) ** 2, axis=-1)
    gap = np.abs(distance - other) / np.maximum(np.abs(other), 1e-12)
    assert gap.max() < rtol, f"not near-ties: relative distance gaps {gap}"


def load_script(name):
    """`scripts/<name>.py` as a module, to call its `main(argv)` in-process."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _script_module(name):
    return load_script(name)


@dataclasses.dataclass
class ScriptResult:
    """What a script run gave: its exit status and its captured output."""

    code: int
    out: str
    err: str


def run_script(name, *argv):
    """`scripts/<name>.py`'s `main(argv)` in this process (on the current
    backend), with stdout and stderr captured; argparse's exits give their
    code. The module is loaded once per session."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _script_module(name).main([str(arg) for arg in argv])
        except SystemExit as exit_info:
            code = exit_info.code
    return ScriptResult(code, out.getvalue(), err.getvalue())


def run_script_process(name, *argv, timeout=300, **env):
    """`python scripts/<name>.py ARGV` in a fresh process (the backend of
    this session unless `env` says otherwise)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    result = subprocess.run(
        [sys.executable, str(script), *map(str, argv)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
        timeout=timeout,
    )
    return ScriptResult(result.returncode, result.stdout, result.stderr)


def interrupt_training(script, argv, monkeypatch, after_epoch=1):
    """Runs `script.main(argv)` (train.py) until a simulated kill, a
    `KeyboardInterrupt` at the end of epoch `after_epoch` (0-based), and
    leaves the training code as it was."""
    import pytest

    from keras_dvq.callbacks.image_logging import ReconstructionLogger

    original = ReconstructionLogger.on_epoch_end

    def crash(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == after_epoch:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(ReconstructionLogger, "on_epoch_end", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            script.main(argv)
    finally:
        monkeypatch.setattr(ReconstructionLogger, "on_epoch_end", original)


def assert_one_line_error(result, script, *words):
    """A bad-input exit: status 2 and one stderr line `<script>.py: error: ...`
    containing every one of `words`; returns that line."""
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err[-2000:])
    assert len(lines) == 1, result.err[-2000:]
    assert lines[0].startswith(f"{script}.py: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
