"""Training on several devices or machines (TensorFlow and JAX).

`strategies`: the scope to build, compile and fit a model in. `replicas`:
in-graph helpers that layers and models use so that a multi-replica step
computes what one device would.
"""

from keras_dvq.distribution.replicas import is_first_replica
from keras_dvq.distribution.replicas import num_replicas
from keras_dvq.distribution.replicas import replica_mean
from keras_dvq.distribution.replicas import scale_loss_for_replicas
from keras_dvq.distribution.strategies import distribution_scope
from keras_dvq.distribution.strategies import is_chief
from keras_dvq.distribution.strategies import is_distributed
from keras_dvq.distribution.strategies import split_cpu
from keras_dvq.distribution.strategies import tf_config_workers
from keras_dvq.distribution.strategies import trains_across_workers

__all__ = [
    "distribution_scope",
    "is_chief",
    "is_distributed",
    "is_first_replica",
    "num_replicas",
    "replica_mean",
    "scale_loss_for_replicas",
    "split_cpu",
    "tf_config_workers",
    "trains_across_workers",
]
