"""Training a tokenizer: the recipe's pieces, resumable `fit`, the run
directory."""

from keras_dvq.training.resumable import fit_resumable

__all__ = ["fit_resumable"]
