"""keras-dvq: deep vector quantization (VQ-VAE, Gumbel, DALL-E dVAE) for Keras 3."""

from keras_dvq import layers
from keras_dvq import losses
from keras_dvq import metrics
from keras_dvq import models

__all__ = ["layers", "losses", "metrics", "models"]

__version__ = "0.1.0"
