from keras_dvq.models.adversarial import AdversarialVQVAE
from keras_dvq.models.dalle import DalleDecoder
from keras_dvq.models.dalle import DalleEncoder
from keras_dvq.models.dalle import DalleResidualBlock
from keras_dvq.models.deepmind import DeepMindDecoder
from keras_dvq.models.deepmind import DeepMindEncoder
from keras_dvq.models.deepmind import DeepMindResidualBlock
from keras_dvq.models.token_prior import TokenPrior
from keras_dvq.models.vqgan import VQGANAttentionBlock
from keras_dvq.models.vqgan import VQGANDecoder
from keras_dvq.models.vqgan import VQGANDownsample
from keras_dvq.models.vqgan import VQGANEncoder
from keras_dvq.models.vqgan import VQGANResidualBlock
from keras_dvq.models.vqvae import VQVAE

__all__ = [
    "AdversarialVQVAE",
    "TokenPrior",
    "VQVAE",
    "DalleDecoder",
    "DalleEncoder",
    "DalleResidualBlock",
    "DeepMindDecoder",
    "DeepMindEncoder",
    "DeepMindResidualBlock",
    "VQGANAttentionBlock",
    "VQGANDecoder",
    "VQGANDownsample",
    "VQGANEncoder",
    "VQGANResidualBlock",
]
