"""Frequency and bigram baselines for docs/prior.md, in bits per token on the
validation shards (add-one smoothed counts of the training shards).

    python docs/prior_baselines.py runs/tokens/sample-train \
        runs/tokens/sample-validation
"""

import sys

import numpy as np

from keras_dvq.data.token_shards import load_token_shards

train = load_token_shards(sys.argv[1])
val = load_token_shards(sys.argv[2])
K = train.vocabulary_size


def entropy(tokens):
    counts = np.bincount(tokens.ravel(), minlength=K)
    p = counts[counts > 0] / counts.sum()
    return -(p * np.log2(p)).sum()


def smoothed(tokens):
    counts = np.bincount(tokens.ravel(), minlength=K) + 1
    return counts / counts.sum()


unigram = smoothed(train.tokens)
per_class = np.concatenate(
    [
        -np.log2(smoothed(train.tokens[train.labels == k])[val.tokens[val.labels == k]])
        for k in range(train.num_classes)
    ]
)
seq = train.tokens.reshape(len(train.tokens), -1)
val_seq = val.tokens.reshape(len(val.tokens), -1)
pairs = np.ones((K, K))
np.add.at(pairs, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
pairs /= pairs.sum(axis=1, keepdims=True)
bigram = np.concatenate(
    [
        -np.log2(unigram[val_seq[:, 0]]),
        -np.log2(pairs[val_seq[:, :-1].ravel(), val_seq[:, 1:].ravel()]),
    ]
)
rows = {
    "log2 K": np.log2(K),
    "entropy of the training histogram": entropy(train.tokens),
    "unigram (training histogram)": -np.log2(unigram[val.tokens.ravel()]).mean(),
    "entropy of the validation histogram (oracle)": entropy(val.tokens),
    "unigram per class": per_class.mean(),
    "bigram (previous token, row-major)": bigram.mean(),
}
for name, bits in rows.items():
    print(f"{name:46s} {bits:.3f}")
