from keras_dvq.models.dalle import DalleDecoder, DalleEncoder, DalleResidualBlock
from keras_dvq.models.deepmind import (
    DeepMindDecoder,
    DeepMindEncoder,
    DeepMindResidualBlock,
)
from keras_dvq.models.vqvae import VQVAE

__all__ = [
    "VQVAE",
    "DalleDecoder",
    "DalleEncoder",
    "DalleResidualBlock",
    "DeepMindDecoder",
    "DeepMindEncoder",
    "DeepMindResidualBlock",
]
