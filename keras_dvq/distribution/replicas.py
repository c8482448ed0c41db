"""In-graph helpers for layers and models under several replicas.

Under `tf.distribute` every replica runs the step on its slice of the batch;
with these, layers make their statistics global and losses add up to the
single-device step. On JAX (one SPMD program over the global batch) and on
one device they are trivial.
"""

import keras


def _replica_context():
    """The `tf.distribute` replica context of a multi-replica step, or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    """Replicas of the current `tf.distribute` step (1 elsewhere)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def is_first_replica():
    """Whether this is replica 0 of a `tf.distribute` step (always true
    elsewhere); a bool or a boolean tensor."""
    context = _replica_context()
    if context is None:
        return True
    return keras.ops.equal(context.replica_id_in_sync_group, 0)


def scale_loss_for_replicas(loss):
    """`loss / num_replicas` under `tf.distribute`, where the gradients of the
    replicas are summed; `loss` elsewhere."""
    context = _replica_context()
    if context is None:
        return loss
    return loss / keras.ops.cast(context.num_replicas_in_sync, loss.dtype)


def replica_mean(tensor):
    """The mean of `tensor` over the replicas of a `tf.distribute` step (an
    all-reduce that gradients flow through); `tensor` elsewhere, where the
    step sees the global batch."""
    context = _replica_context()
    if context is None:
        return tensor
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.MEAN, tensor)
