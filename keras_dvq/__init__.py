"""keras-dvq: deep vector quantization (VQ-VAE, Gumbel, DALL-E dVAE) for Keras 3."""

from keras_dvq import layers
from keras_dvq import losses
from keras_dvq import metrics
from keras_dvq import models

# Registers `CosineAnnealing`, the learning-rate schedule inside the `.keras`
# files of scripts/train.py: they must load after `import keras_dvq` alone.
from keras_dvq import schedules
from keras_dvq.evaluation import measures as evaluation

__all__ = ["evaluation", "layers", "losses", "metrics", "models", "schedules"]

__version__ = "0.1.0"
