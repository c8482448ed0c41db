from keras_dvq.layers.gumbel_quantizer import GumbelQuantizer
from keras_dvq.layers.vector_quantizer import VectorQuantizer

__all__ = ["GumbelQuantizer", "VectorQuantizer"]
