"""Tokenizers outside training: SavedModel export for TF Serving, one
loader for `.keras` models and exported tokenizers alike, a dataset
written through a tokenizer as token shards, and diffusers' VQGAN
(`VQModel`) converted into a `VQVAE`."""

from keras_dvq.export.diffusers_vqgan import load_vq_model
from keras_dvq.export.saved_model import export_tokenizer
from keras_dvq.export.saved_model import read_tokenizer_info
from keras_dvq.export.token_dataset import tokenize_dataset
from keras_dvq.export.tokenizers import load_tokenizer

__all__ = [
    "export_tokenizer",
    "load_vq_model",
    "load_tokenizer",
    "read_tokenizer_info",
    "tokenize_dataset",
]
