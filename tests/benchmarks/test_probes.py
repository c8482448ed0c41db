"""benchmarks.probes: host round-trips and memory of a worker."""

import pytest

from benchmarks import probes


@pytest.mark.backend_independent
def test_graph_check_counts_python_callbacks():
    import tensorflow as tf

    def step(x):
        return tf.py_function(lambda y: y * 2, [x], tf.float32) + 1.0

    spec = tf.TensorSpec((), tf.float32)
    graph = tf.function(step).get_concrete_function(spec).graph
    counts = probes.tf_op_types(graph)
    assert sum(counts.get(op, 0) for op in probes.PY_FUNCTION_OPS) == 1


@pytest.mark.backend_independent
def test_cpu_peak_memory_is_the_resident_set_in_mb():
    import resource

    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # This process holds TensorFlow: well over 10 MB and under a terabyte.
    assert 10 < probes.peak_memory_mb("cpu") < 2**20
    assert probes.peak_memory_mb("cpu") >= kilobytes / 1024
