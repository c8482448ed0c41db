from keras_dvq.models.dalle import DalleDecoder, DalleEncoder, DalleResidualBlock
from keras_dvq.models.deepmind import (
    DeepMindDecoder,
    DeepMindEncoder,
    DeepMindResidualBlock,
)
from keras_dvq.models.vqvae import VQVAE
