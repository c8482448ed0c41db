"""Keras callbacks of a tokenizer's training run.

Each file holds one callback (or one family): the codebook's k-means start,
the Gumbel schedules, the backups a resumed run continues from, the best
model, the metrics file, the divergence stop and the pictures.
"""

from keras_dvq.callbacks.best_checkpoint import BestCheckpoint
from keras_dvq.callbacks.image_logging import ReconstructionLogger
from keras_dvq.callbacks.image_logging import TrainingCurves
from keras_dvq.callbacks.kmeans_init import KMeansInit
from keras_dvq.callbacks.metrics_logger import MetricsLogger
from keras_dvq.callbacks.quantizer_schedules import ArgmaxCodesPhase
from keras_dvq.callbacks.quantizer_schedules import KLWeightRamp
from keras_dvq.callbacks.quantizer_schedules import TemperatureAnnealing
from keras_dvq.callbacks.step_backup import StepBackup
from keras_dvq.callbacks.stop_on_divergence import StopOnDivergence

__all__ = [
    "ArgmaxCodesPhase",
    "BestCheckpoint",
    "KLWeightRamp",
    "KMeansInit",
    "MetricsLogger",
    "ReconstructionLogger",
    "StepBackup",
    "StopOnDivergence",
    "TemperatureAnnealing",
    "TrainingCurves",
]
