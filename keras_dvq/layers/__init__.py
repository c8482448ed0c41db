from keras_dvq.layers.discriminator import PatchDiscriminator
from keras_dvq.layers.finite_scalar_quantizer import FiniteScalarQuantizer
from keras_dvq.layers.gumbel_quantizer import GumbelQuantizer
from keras_dvq.layers.lookup_free_quantizer import LookupFreeQuantizer
from keras_dvq.layers.quantizer import Quantizer
from keras_dvq.layers.residual_vector_quantizer import ResidualVectorQuantizer
from keras_dvq.layers.vector_quantizer import VectorQuantizer

__all__ = [
    "FiniteScalarQuantizer",
    "GumbelQuantizer",
    "LookupFreeQuantizer",
    "PatchDiscriminator",
    "Quantizer",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
]
