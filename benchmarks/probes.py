"""Probes of one worker process: peak memory and host round-trips of a step."""

import importlib.util
import os
import resource
import sys

import keras

PY_FUNCTION_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless")


def check_gpu(backend):
    """Exits the worker when `--device gpu` finds no GPU for `backend`."""
    if backend == "tensorflow":
        import tensorflow as tf

        found = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        found = jax.default_backend() == "gpu"
    else:
        import torch

        found = torch.cuda.is_available()
    if not found:
        raise SystemExit(f"--device gpu: the {backend} backend sees no GPU")


def peak_memory_mb(device):
    """The device's peak allocation on a GPU, the process' maximum RSS on CPU."""
    backend = keras.backend.backend()
    if device == "gpu":
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", float("nan")) / 2**20
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def host_round_trips(model, batch, steps=3):
    """Counts what forces the host into a compiled training step.

    TensorFlow: Python callbacks (`py_function` ops) in the step's graph.
    JAX: the step runs under `jax.transfer_guard("disallow")` on device
    data; any host<->device transfer inside it raises. PyTorch (eager): the
    profiler's count of `aten::_local_scalar_dense` (`.item()`, a device to
    host read) per step.
    """
    backend = keras.backend.backend()
    model.make_train_function()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None,) + batch.shape[1:], batch.dtype)
        graph = tf.function(model.train_step).get_concrete_function((spec,)).graph
        ops = tf_op_types(graph)
        py_ops = sum(ops.get(op, 0) for op in PY_FUNCTION_OPS)
        data = iter(tf.data.Dataset.from_tensors((batch,)).repeat())
        calls = _python_calls_into_package(lambda: model.train_function(data), steps)
        return {
            "method": "py_function ops in the step graph + Python calls into "
            "keras_dvq while compiled steps run (sys.setprofile)",
            "per_step": py_ops + calls / steps,
        }
    if backend == "jax":
        import jax

        state = model._get_jax_state(
            trainable_variables=True,
            non_trainable_variables=True,
            optimizer_variables=True,
            metrics_variables=True,
        )
        state = jax.tree_util.tree_map(lambda v: v.copy(), state)
        data = (jax.device_put(batch),)
        try:
            with jax.transfer_guard("disallow"):
                for _ in range(steps):
                    logs, state = model.train_function(state, iter([data]))
            jax.block_until_ready(logs)
            per_step = 0
        except Exception as error:  # the guard raises on a transfer
            return {
                "method": "jax.transfer_guard('disallow')",
                "per_step": 1,
                "error": str(error)[:300],
            }
        return {"method": "jax.transfer_guard('disallow')", "per_step": per_step}
    import torch

    data = (torch.as_tensor(batch),)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
    ) as prof:
        for _ in range(steps):
            model.train_function([data])
    reads = sum(
        event.count
        for event in prof.key_averages()
        if event.key == "aten::_local_scalar_dense"
    )
    return {
        "method": "torch.profiler: aten::_local_scalar_dense",
        "per_step": reads / steps,
    }


def tf_op_types(graph):
    """Op type counts of a graph, its nested functions included."""
    graph_def = graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes += list(function.node_def)
    counts = {}
    for node in nodes:
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def _python_calls_into_package(step, steps):
    """Calls of Python functions of keras_dvq while `step()` runs `steps`
    times: a compiled step runs none; a host callback would."""
    package = os.path.dirname(importlib.util.find_spec("keras_dvq").origin)
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls += 1

    step()  # a first call may trace
    sys.setprofile(profile)
    try:
        for _ in range(steps):
            step()
    finally:
        sys.setprofile(None)
    return calls
