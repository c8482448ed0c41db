"""The tokenizer yardstick (distortion against rate, codebook usage, the
measures that see blur, LPIPS, rFID) and every picture the package draws."""

from keras_dvq.evaluation.fid import frechet_distance
from keras_dvq.evaluation.fid import load_inception
from keras_dvq.evaluation.lpips import LPIPS
from keras_dvq.evaluation.lpips import load_lpips
from keras_dvq.evaluation.measures import SplitEvaluation
from keras_dvq.evaluation.measures import entropy_bits
from keras_dvq.evaluation.measures import gaussian_window
from keras_dvq.evaluation.measures import gmsd
from keras_dvq.evaluation.measures import laplacian_energy
from keras_dvq.evaluation.measures import ms_ssim
from keras_dvq.evaluation.measures import ms_ssim_scales
from keras_dvq.evaluation.measures import mse_per_image
from keras_dvq.evaluation.measures import psnr
from keras_dvq.evaluation.measures import psnr_of_mse
from keras_dvq.evaluation.measures import rate_statistics
from keras_dvq.evaluation.measures import sharpness_ratio
from keras_dvq.evaluation.measures import ssim
from keras_dvq.evaluation.measures import to_unit_float

__all__ = [
    "LPIPS",
    "SplitEvaluation",
    "entropy_bits",
    "frechet_distance",
    "gaussian_window",
    "gmsd",
    "laplacian_energy",
    "load_inception",
    "load_lpips",
    "ms_ssim",
    "ms_ssim_scales",
    "mse_per_image",
    "psnr",
    "psnr_of_mse",
    "rate_statistics",
    "sharpness_ratio",
    "ssim",
    "to_unit_float",
]
