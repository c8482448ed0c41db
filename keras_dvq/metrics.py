"""Codebook health metrics computed from a histogram of the whole epoch."""

import keras
from keras import ops

from keras_dvq.evaluation.measures import entropy_bits
from keras_dvq.ops.code_statistics import code_counts
from keras_dvq.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_dvq")
class CodebookUsage(keras.metrics.Metric):
    """Perplexity and number of used codes of a token histogram.

    The histogram accumulates over every batch until `reset_state()` (Keras
    resets it at the start of each epoch and evaluation), so both values
    describe the whole epoch: perplexity depends on how many tokens the
    histogram covers, and a mean of per-batch perplexities would understate
    it. The histogram is summed across replicas.

    `result()` returns a dict:
    - `perplexity`: `exp(-sum_k p_k log p_k)` of the code frequencies `p`
      (`2 ** bits per token`, see `keras_dvq.evaluation.rate_statistics`);
    - `cluster_use`: the number of codes used at least once.

    Args:
        num_embeddings: int. Size of the codebook.
        name: name of the metric. Defaults to `"codebook_usage"`.
        dtype: dtype of the results.

    Example:

    ```python
    usage = CodebookUsage(num_embeddings=4)
    usage.update_state(np.array([[0, 0], [1, 1]]))
    usage.result()  # {"perplexity": 2.0, "cluster_use": 2.0}
    ```
    """

    def __init__(self, num_embeddings=512, name="codebook_usage", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.counts = self.add_variable(
            shape=(num_embeddings,),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="counts",
        )

    def update_state(self, tokens, sample_weight=None):
        self.counts.assign_add(code_counts(tokens, self.num_embeddings))

    def result(self):
        perplexity = ops.power(2.0, entropy_bits(self.counts))
        used = ops.sum(ops.cast(self.counts > 0, "float32"))
        return {"perplexity": perplexity, "cluster_use": used}

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_embeddings,), dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "num_embeddings": self.num_embeddings}
