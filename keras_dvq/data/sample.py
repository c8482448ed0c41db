"""The `sample` dataset: 32x32 patches of the photographs scikit-image ships.

It makes every command work offline on a fresh machine. Each photograph is
split by columns: patches of the left 80% form the training split, patches of
the right 20% the validation split, so the two never share pixels. Patches are
cut on a regular grid at full resolution and at 1/2 and 1/4 scale (block
means), which gives CIFAR-like mixes of texture and object-scale content. The
result is deterministic: no randomness is involved. Each patch's class is the
photograph it comes from (`PHOTOGRAPHS` gives the class names in id order).
"""

import numpy as np

# RGB photographs inside the scikit-image wheel (no download needed).
PHOTOGRAPHS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
PATCH_SIZE = 32
VALIDATION_FRACTION = 0.2
SCALES_AND_STRIDES = ((1, 16), (2, 12), (4, 8))


def load_sample_patches(split="train", return_labels=False):
    """Returns the `sample` split as uint8 patches `(N, 32, 32, 3)`.

    Args:
        split: `"train"` (>= 10,000 patches) or `"validation"` (>= 2,000).
        return_labels: bool. Also return the int32 class ids `(N,)`: the
            index in `PHOTOGRAPHS` of each patch's photograph.
    """
    if split not in ("train", "validation"):
        raise ValueError(
            "Argument `split` of the sample dataset must be 'train' or "
            f"'validation'. Received: split={split!r}"
        )
    patches, labels = [], []
    for label, photo in enumerate(_photographs()):
        boundary = int(photo.shape[1] * (1 - VALIDATION_FRACTION))
        region = photo[:, :boundary] if split == "train" else photo[:, boundary:]
        for scale, stride in SCALES_AND_STRIDES:
            patches.append(_grid_patches(_downscale(region, scale), stride))
            labels.append(np.full(len(patches[-1]), label, dtype=np.int32))
    if return_labels:
        return np.concatenate(patches), np.concatenate(labels)
    return np.concatenate(patches)


def _photographs():
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(
            "The `sample` dataset needs scikit-image (`pip install scikit-image`)."
        ) from error
    for name in PHOTOGRAPHS:
        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo pairs: the left view
            image = image[0]
        yield np.asarray(image[..., :3], dtype=np.uint8)


def _downscale(image, factor):
    if factor == 1:
        return image
    height = image.shape[0] // factor * factor
    width = image.shape[1] // factor * factor
    blocks = image[:height, :width].reshape(
        height // factor, factor, width // factor, factor, 3
    )
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def _grid_patches(image, stride):
    rows = range(0, image.shape[0] - PATCH_SIZE + 1, stride)
    cols = range(0, image.shape[1] - PATCH_SIZE + 1, stride)
    patches = [
        image[r : r + PATCH_SIZE, c : c + PATCH_SIZE] for r in rows for c in cols
    ]
    # A region smaller than a patch at this scale contributes none.
    return np.asarray(patches, dtype=np.uint8).reshape(-1, PATCH_SIZE, PATCH_SIZE, 3)
