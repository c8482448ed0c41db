"""Training a tokenizer: `train_tokenizer(TrainingConfig(...))` runs what
`scripts/train.py` runs; the pieces (builders, flags, resumable `fit`, the run
directory) are here for other entry points (the tuner, the benchmarks)."""

from keras_dvq.training.config import TrainingConfig
from keras_dvq.training.resumable import fit_resumable
from keras_dvq.training.run import train_tokenizer

__all__ = ["TrainingConfig", "fit_resumable", "train_tokenizer"]
