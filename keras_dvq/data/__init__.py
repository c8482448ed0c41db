"""Where images and tokens come from: tf.data pipelines of image datasets,
the bundled `sample` patches, and token shards."""

from keras_dvq.data.datasets import class_names
from keras_dvq.data.datasets import load_dataset
from keras_dvq.data.sample import load_sample_patches
from keras_dvq.data.token_shards import TokenShardWriter
from keras_dvq.data.token_shards import load_token_shards
from keras_dvq.data.token_shards import write_token_shards

__all__ = [
    "TokenShardWriter",
    "class_names",
    "load_dataset",
    "load_sample_patches",
    "load_token_shards",
    "write_token_shards",
]
