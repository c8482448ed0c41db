"""The scope to build, compile and fit a model in, on several devices or
machines.

`distribution_scope(num_devices)`: on TensorFlow a `MirroredStrategy` over
the devices, or a `MultiWorkerMirroredStrategy` when `TF_CONFIG` names
several workers; on JAX a `keras.distribution.DataParallel` over the devices.
With `keras_dvq.distribution.replicas`, the only distribution-specific code
of the package.
"""

import contextlib
import functools
import json
import os

import keras


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical TensorFlow devices.

    For running multi-replica code without GPUs (tests, CPU-only machines).
    Must run before TensorFlow executes its first operation. On JAX, set
    `XLA_FLAGS=--xla_force_host_platform_device_count=N` before starting
    Python instead.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as error:
        raise ValueError(
            f"split_cpu({num_devices}) must run before TensorFlow starts "
            f"executing operations ({error})."
        ) from error


def tf_config_workers():
    """The number of workers `TF_CONFIG` names (0 without `TF_CONFIG`)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    return len(cluster.get("worker", ())) + len(cluster.get("chief", ()))


def is_chief():
    """Whether this process writes checkpoints and outputs: always, except
    on the non-chief workers of a `TF_CONFIG` cluster."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if task.get("type") == "chief":
        return True
    return "chief" not in cluster and task.get("index", 0) == 0


def trains_across_workers(model):
    """Whether `model` was created under a multi-worker `tf.distribute`
    strategy that spans several workers."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = model.distribute_strategy
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def is_distributed(model):
    """Whether `model`'s compiled steps run over several replicas: a
    `keras.distribution` is set (JAX), or the model's `tf.distribute`
    strategy has more than one replica in sync."""
    if keras.distribution.distribution() is not None:
        return True
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is not None and strategy.num_replicas_in_sync > 1


def distribution_scope(num_devices=None, device_type=None):
    """The scope to build, compile and `fit` a model on several devices in.

    Args:
        num_devices: int or `None`. Devices of this machine to train on; `None`
            takes all of them (GPUs if any, else CPUs).
        device_type: `"GPU"`, `"CPU"` or `None` for GPUs when present.

    Call it before TensorFlow runs any operation when `TF_CONFIG` names
    several workers: their collectives are configured at start-up.

    Returns:
        A context manager: a `tf.distribute` strategy's scope on TensorFlow
        (multi-worker when `TF_CONFIG` names several workers), a
        `keras.distribution.DataParallel` scope on JAX, or a no-op for one
        device.

    Example:

    ```python
    with distribution_scope(2):
        model = VQVAE.from_flavors()
        model.compile()
        model.fit(dataset, epochs=1)  # global batch = the dataset's batch
    ```
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_strategy(num_devices, device_type).scope()
    if backend == "jax":
        return _jax_data_parallel(num_devices, device_type)
    if num_devices not in (None, 1):
        raise ValueError(
            f"Training on {num_devices} devices needs the TensorFlow or JAX "
            f"backend. Received: num_devices={num_devices} on the {backend} "
            "backend"
        )
    return contextlib.nullcontext()


def _tensorflow_strategy(num_devices, device_type):
    import tensorflow as tf

    if tf_config_workers() > 1:
        return _strategy_over(None)
    available = []
    for kind in [device_type] if device_type else ["GPU", "CPU"]:
        available = [device.name for device in tf.config.list_logical_devices(kind)]
        if available:
            break
    return _strategy_over(tuple(_local_devices(available, num_devices)))


# One strategy per set of devices and process. A second MirroredStrategy over
# the same devices numbers its collective instances from the start again, and
# its first all-reduce after the first strategy's ran fails ("Shape mismatch
# in the collective instance 100"): a program that trains two models, one
# after the other, must share the first's strategy.
@functools.cache
def _strategy_over(devices):
    """The strategy over a tuple of device names (`None`: the `TF_CONFIG`
    cluster)."""
    import tensorflow as tf

    if devices is None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.MirroredStrategy(list(devices))


def _jax_data_parallel(num_devices, device_type):
    try:
        available = keras.distribution.list_devices(device_type and device_type.lower())
    except RuntimeError:  # JAX has no such platform here (e.g. "gpu")
        available = []
    devices = _local_devices(available, num_devices)
    if len(devices) == 1:
        return contextlib.nullcontext()
    return keras.distribution.DataParallel(devices=devices).scope()


def _local_devices(available, num_devices):
    if num_devices is None:
        return available
    if isinstance(num_devices, bool) or not isinstance(num_devices, int):
        raise ValueError(
            f"Argument `num_devices` must be a positive integer or None. "
            f"Received: num_devices={num_devices!r}"
        )
    if not 1 <= num_devices <= len(available):
        raise ValueError(
            f"Argument `num_devices` must be between 1 and the {len(available)} "
            f"device(s) available ({', '.join(available)}). "
            f"Received: num_devices={num_devices}"
        )
    return available[:num_devices]
