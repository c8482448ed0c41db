"""LPIPS (Zhang et al. 2018): the learned perceptual distance, on VGG16.

Both images go through VGG16 (`keras.applications.VGG16`, without its
classifier); at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 each feature
vector is divided by its norm over channels, the squared difference of the
two images' normalised features is weighted per channel by a learned 1x1
linear head (non-negative, no bias), averaged over positions and summed over
the five layers: one distance per image pair, 0 for identical images.

No weights ship with this package and none are downloaded here:

- the backbone comes from a file (`vgg_weights`): torchvision's VGG16
  state dict (`vgg16-397923af.pth`, read with PyTorch), which the published
  LPIPS heads were fitted on, or a Keras VGG16 file without the top
  (`.h5` / `.weights.h5`), such as Keras' own ImageNet weights, which
  `load_lpips` also finds already downloaded in `~/.keras/models`;
- the heads come from a file (`lpips_weights`: the `lpips` package's
  `weights/v0.1/vgg.pth` or a `.npz` of `lin0` .. `lin4`) or, when the
  `lpips` package is installed, from its bundled `weights/v0.1/vgg.pth`
  (found without importing the package, which needs torchvision).

Input scaling follows the backbone. torchvision's VGG16 takes LPIPS' own
scaling, images in [0, 1] to [-1, 1], then `(x - shift) / scale` with shift
(-.030, -.088, -.188) and scale (.458, .448, .450) (ImageNet's mean and
standard deviation on [-1, 1]): `preprocessing="lpips"`. Keras' ImageNet VGG16
is the original Caffe model and takes BGR pixels in [0, 255] minus the
ImageNet mean: `preprocessing="caffe"`. Only the torchvision backbone gives
the published LPIPS values; Keras' weights with the same heads give a
distance of the same kind, not the same numbers.
"""

import importlib.util
import os

import keras
import numpy as np
from keras import ops

from keras_dvq.utils.errors import BadInput
from keras_dvq.utils.errors import describe

# Keras VGG16's convolutions include their ReLU: these outputs are relu1_2,
# relu2_2, relu3_3, relu4_3 and relu5_3 of the paper.
LPIPS_LAYERS = (
    "block1_conv2",
    "block2_conv2",
    "block3_conv3",
    "block4_conv3",
    "block5_conv3",
)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' ScalingLayer, on inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# keras.applications.imagenet_utils' "caffe" mode: BGR means on [0, 255].
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The convolutions of torchvision's `vgg16().features`, in Keras' order.
TORCHVISION_CONVOLUTIONS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
KERAS_VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# relu5_3 follows four 2x2 poolings: smaller images leave it no position.
MIN_SIZE = 16
HOW_TO_GET_WEIGHTS = (
    "give --vgg_weights FILE (torchvision's vgg16-397923af.pth, or a Keras "
    "VGG16 notop .h5 / .weights.h5) and, unless the `lpips` package is "
    "installed, --lpips_weights FILE (the lpips package's weights/v0.1/vgg.pth)"
)


@keras.saving.register_keras_serializable(package="keras_dvq")
class LPIPS(keras.Model):
    """The LPIPS distance between two batches of images, frozen.

    Maps `(x, y)`, two `(N, H, W, 3)` batches of images in [0, 1] (H, W >= 16),
    to `(N,)` distances. It is differentiable with respect to both images
    (a perceptual loss) and its weights are frozen (`trainable=False`). It is
    built with random weights: load trained ones with `load_lpips`, or
    `load_vgg16_weights` and `load_lpips_heads`.

    Args:
        preprocessing: `"lpips"` (LPIPS' scaling, for torchvision's VGG16
            weights) or `"caffe"` (BGR, [0, 255] minus the ImageNet mean, for
            Keras' ImageNet VGG16 weights).

    Call arguments:
        inputs: a pair `(x, y)` of image batches in [0, 1].

    Example:

    ```python
    lpips = load_lpips(vgg_weights="vgg16-397923af.pth")
    distances = lpips((images, reconstructions))  # (N,)
    ```

    Reference:
        Zhang, Isola, Efros, Shechtman and Wang, "The Unreasonable
        Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018;
        github.com/richzhang/PerceptualSimilarity (`lpips/lpips.py`).
    """

    def __init__(self, preprocessing="lpips", **kwargs):
        super().__init__(**kwargs)
        if preprocessing not in ("lpips", "caffe"):
            raise ValueError(
                'Argument `preprocessing` must be "lpips" or "caffe". '
                f"Received: preprocessing={preprocessing!r}"
            )
        self.preprocessing = preprocessing
        vgg = keras.applications.VGG16(
            include_top=False, weights=None, input_shape=(None, None, 3)
        )
        self.vgg = vgg
        self.features = keras.Model(
            vgg.input,
            [vgg.get_layer(name).output for name in LPIPS_LAYERS],
            name="vgg16_lpips_features",
        )
        self.heads = [
            keras.layers.Conv2D(
                1,
                1,
                use_bias=False,
                # LPIPS clamps its heads to >= 0 while fitting them.
                kernel_constraint=keras.constraints.NonNeg(),
                name=f"lin{index}",
            )
            for index in range(len(LPIPS_LAYERS))
        ]
        for head, channels in zip(self.heads, LPIPS_CHANNELS, strict=True):
            head.build((None, None, None, channels))
        self.trainable = False
        self.built = True  # every weight exists: VGG16 and the heads are built

    def _scaled(self, images):
        images = ops.cast(images, "float32")
        if self.preprocessing == "lpips":
            shift = ops.convert_to_tensor(np.array(LPIPS_SHIFT, "float32"))
            scale = ops.convert_to_tensor(np.array(LPIPS_SCALE, "float32"))
            return (2.0 * images - 1.0 - shift) / scale
        mean = ops.convert_to_tensor(np.array(CAFFE_MEAN_BGR, "float32"))
        return ops.flip(images, axis=-1) * 255.0 - mean

    def call(self, inputs):
        x, y = inputs
        for images in (x, y):
            if len(images.shape) != 4 or images.shape[-1] != 3:
                raise ValueError(
                    "LPIPS takes RGB image batches (N, H, W, 3). Received: "
                    f"shape {tuple(images.shape)}"
                )
            sides = [side for side in images.shape[1:3] if side is not None]
            if sides and min(sides) < MIN_SIZE:
                raise ValueError(
                    f"LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE} "
                    f"(relu5_3 is 16x coarser). Received: shape "
                    f"{tuple(images.shape)}"
                )
        features_x = self.features(self._scaled(x))
        features_y = self.features(self._scaled(y))
        distance = 0.0
        for head, a, b in zip(self.heads, features_x, features_y, strict=True):
            difference = ops.square(_unit_normalised(a) - _unit_normalised(b))
            distance = distance + ops.mean(head(difference), axis=(1, 2, 3))
        return distance

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        config = super().get_config()
        config.update({"preprocessing": self.preprocessing})
        return config


def _unit_normalised(features):
    """LPIPS' `normalize_tensor`: x / (||x|| + 1e-10) over channels. The
    square root's argument is kept >= 1e-20 so that an all-zero feature
    vector (every ReLU off) has a finite gradient; its value is unchanged
    there (the vector is 0 either way)."""
    features = ops.cast(features, "float32")
    squares = ops.sum(ops.square(features), axis=-1, keepdims=True)
    return features / (ops.sqrt(ops.maximum(squares, 1e-20)) + 1e-10)


def load_vgg16_weights(lpips, path):
    """Loads VGG16 weights into `lpips`' backbone from a torchvision state
    dict (`.pth` / `.pt`, read with PyTorch) or a Keras VGG16 file without
    top (`.h5`, `.weights.h5`). A file that cannot be used raises `BadInput`
    naming `--vgg_weights`."""
    if not os.path.isfile(path):
        raise BadInput(f"--vgg_weights {path}: not found; {HOW_TO_GET_WEIGHTS}.")
    try:
        if path.endswith((".pth", ".pt")):
            _set_torchvision_vgg16(lpips.vgg, _torch_load(path))
        else:
            lpips.vgg.load_weights(path)
    except BadInput:
        raise
    except Exception as error:  # h5py, torch or shape errors of a wrong file
        raise BadInput(
            f"--vgg_weights {path}: not VGG16 weights without the top "
            f"({describe(error)})"
        ) from None


def _set_torchvision_vgg16(vgg, state):
    convolutions = [layer for layer in vgg.layers if "conv" in layer.name]
    for layer, index in zip(convolutions, TORCHVISION_CONVOLUTIONS, strict=True):
        kernel = np.asarray(state[f"features.{index}.weight"], "float32")
        bias = np.asarray(state[f"features.{index}.bias"], "float32")
        # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out); both correlate.
        layer.set_weights([kernel.transpose(2, 3, 1, 0), bias])


def load_lpips_heads(lpips, path):
    """Loads the five linear heads from the `lpips` package's `vgg.pth`
    (tensors `lin{i}.model.1.weight` of shape (1, C, 1, 1), read with
    PyTorch) or from a `.npz` with arrays `lin0` .. `lin4` of C values."""
    if not os.path.isfile(path):
        raise BadInput(f"--lpips_weights {path}: not found; {HOW_TO_GET_WEIGHTS}.")
    try:
        if path.endswith(".npz"):
            with np.load(path) as arrays:
                heads = [arrays[f"lin{i}"] for i in range(len(LPIPS_LAYERS))]
        else:
            state = _torch_load(path)
            heads = [state[f"lin{i}.model.1.weight"] for i in range(len(LPIPS_LAYERS))]
        for head, weights, channels in zip(
            lpips.heads, heads, LPIPS_CHANNELS, strict=True
        ):
            weights = np.asarray(weights, "float32").reshape(1, 1, channels, 1)
            if (weights < 0).any():
                raise ValueError("negative head weights")
            head.set_weights([weights])
    except BadInput:
        raise
    except Exception as error:
        raise BadInput(
            f"--lpips_weights {path}: not LPIPS VGG heads lin0..lin4 of "
            f"{LPIPS_CHANNELS} non-negative weights ({describe(error)})"
        ) from None


def _torch_load(path):
    try:
        import torch
    except ImportError:
        raise BadInput(
            f"{path}: reading a PyTorch file needs PyTorch (pip install torch); "
            "a Keras .h5 backbone and .npz heads do not"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.numpy() for key, value in state.items()}


def installed_lpips_heads():
    """The `lpips` package's bundled `weights/v0.1/vgg.pth`, or None. The
    package is located, not imported: importing it needs torchvision."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "weights", "v0.1", "vgg.pth")
        if os.path.isfile(path):
            return path
    return None


def cached_keras_vgg16():
    """Keras' ImageNet VGG16 notop file if Keras downloaded it before, else
    None (nothing is downloaded here)."""
    path = os.path.join(
        os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
        "models",
        KERAS_VGG16_FILE,
    )
    return path if os.path.isfile(path) else None


def lpips_weight_files(vgg_weights=None, lpips_weights=None):
    """The backbone's and the heads' weight files `load_lpips` would read,
    defaults resolved, or a one-line `BadInput` saying how to supply them;
    nothing is loaded (a script checks its flags before its data)."""
    # A file the user named and that is not there says so first, whatever
    # else is missing (the lpips package may or may not be installed).
    for flag, path in (
        ("--vgg_weights", vgg_weights),
        ("--lpips_weights", lpips_weights),
    ):
        if path is not None and not os.path.isfile(path):
            raise BadInput(f"{flag} {path}: not found; {HOW_TO_GET_WEIGHTS}.")
    vgg_weights = vgg_weights or cached_keras_vgg16()
    lpips_weights = lpips_weights or installed_lpips_heads()
    if vgg_weights is None or lpips_weights is None:
        missing = "VGG16 weights" if vgg_weights is None else "LPIPS heads"
        raise BadInput(
            f"LPIPS needs trained weights ({missing} missing): {HOW_TO_GET_WEIGHTS}."
        )
    return str(vgg_weights), str(lpips_weights)


def load_lpips(vgg_weights=None, lpips_weights=None, preprocessing=None):
    """A frozen `LPIPS` with trained weights, or a one-line `BadInput`
    saying how to supply them.

    Args:
        vgg_weights: path of the backbone's weights (see `load_vgg16_weights`);
            default: Keras' cached ImageNet VGG16 notop file, if present.
        lpips_weights: path of the heads (see `load_lpips_heads`); default:
            the installed `lpips` package's `weights/v0.1/vgg.pth`.
        preprocessing: `"lpips"` or `"caffe"`; default: `"lpips"` for a
            PyTorch (torchvision) backbone, `"caffe"` for a Keras file (Keras'
            only VGG16 weights are the Caffe model's).

    Example:

    ```python
    lpips = load_lpips("vgg16-397923af.pth", "vgg.pth")
    lpips((images, reconstructions))
    ```
    """
    vgg_weights, lpips_weights = lpips_weight_files(vgg_weights, lpips_weights)
    if preprocessing is None:
        torch_file = str(vgg_weights).endswith((".pth", ".pt"))
        preprocessing = "lpips" if torch_file else "caffe"
    lpips = LPIPS(preprocessing=preprocessing)
    load_vgg16_weights(lpips, str(vgg_weights))
    load_lpips_heads(lpips, str(lpips_weights))
    # Where the weights came from, for reports (defaults resolved).
    lpips.weight_files = {"vgg": str(vgg_weights), "heads": str(lpips_weights)}
    return lpips
