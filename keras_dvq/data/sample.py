"""The `sample` dataset: square patches of the photographs scikit-image ships.

It makes every command work offline on a fresh machine. Each photograph is
split by columns: patches of the left 80% form the training split, patches of
the right 20% the validation split, so the two never share pixels. Patches are
cut on a regular grid at full resolution and at 1/2 and 1/4 scale (block
means), which gives CIFAR-like mixes of texture and object-scale content. The
result is deterministic: no randomness is involved. Each patch's class is the
photograph it comes from (`PHOTOGRAPHS` gives the class names in id order).

Patches are 32x32 by default and any size from 16 to 256 on request
(`patch_size`). Sizes up to 32 use the 32-px grid strides (16, 12 and 8 px at
scales 1, 2 and 4); larger sizes use a stride of a quarter patch at every
scale, so that the narrow validation regions still give hundreds of patches at
128 px. Patches per split (train / validation):

    patch size   16:  22,490 / 5,216
    patch size   24:  21,638 / 4,731
    patch size   32:  20,866 / 4,250
    patch size   64:  14,845 / 2,542
    patch size  128:   3,028 /   318
    patch size  256:     490 /    19  (all from retina: the only validation
                                       region 256 px wide)
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
PATCH_SIZES = range(16, 257)  # the sizes `patch_size` accepts
VALIDATION_FRACTION = 0.2
SCALES_AND_STRIDES = ((1, 16), (2, 12), (4, 8))
SCALES = tuple(scale for scale, _ in SCALES_AND_STRIDES)


def load_sample_patches(split="train", return_labels=False, patch_size=PATCH_SIZE):
    """Returns the `sample` split as uint8 patches `(N, S, S, 3)`.

    Args:
        split: `"train"` or `"validation"`. At 32 px: 20,866 and 4,250
            patches (the module docstring gives the counts at other sizes).
        return_labels: bool. Also return the int32 class ids `(N,)`: the
            index in `PHOTOGRAPHS` of each patch's photograph.
        patch_size: int. Side `S` of the patches, from 16 to 256.
    """
    patches, labels = [], []
    for label, _, _, stride, region in _regions(split, patch_size):
        patches.append(_grid_patches(region, stride, patch_size))
        labels.append(np.full(len(patches[-1]), label, dtype=np.int32))
    if return_labels:
        return np.concatenate(patches), np.concatenate(labels)
    return np.concatenate(patches)


def strides(patch_size):
    """`(scale, stride)` pairs of the patch grid at `patch_size`: the 32-px
    table up to 32 px (the bundled 32-px sample is unchanged), a quarter
    patch at every scale above."""
    if patch_size <= PATCH_SIZE:
        return SCALES_AND_STRIDES
    return tuple((scale, patch_size // 4) for scale in SCALES)


def patch_boxes(split="train", patch_size=PATCH_SIZE):
    """Where each patch of `load_sample_patches(split, patch_size=...)` lies
    in its photograph, in the same order: int rows `(label, top, left,
    side)` in full-resolution pixels (`side` is the patch size times its
    scale). Also returns the column boundary of each photograph's splits."""
    boxes, boundaries = [], []
    for label, photo, scale, stride, region in _regions(split, patch_size):
        boundary = _boundary(photo)
        offset = 0 if split == "train" else boundary
        for top, left in _grid(region.shape, stride, patch_size):
            boxes.append(
                (label, top * scale, offset + left * scale, patch_size * scale)
            )
        if label == len(boundaries):
            boundaries.append(boundary)
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4), boundaries


def _regions(split, patch_size):
    """`(label, photograph, scale, stride, downscaled region)` of a split."""
    if split not in ("train", "validation"):
        raise ValueError(
            "Argument `split` of the sample dataset must be 'train' or "
            f"'validation'. Received: split={split!r}"
        )
    if not isinstance(patch_size, (int, np.integer)) or patch_size not in PATCH_SIZES:
        raise ValueError(
            "Argument `patch_size` of the sample dataset must be an int from "
            f"16 to 256. Received: patch_size={patch_size!r}"
        )
    for label, photo in enumerate(photographs()):
        boundary = _boundary(photo)
        region = photo[:, :boundary] if split == "train" else photo[:, boundary:]
        for scale, stride in strides(patch_size):
            yield label, photo, scale, stride, _downscale(region, scale)


def _boundary(photo):
    return int(photo.shape[1] * (1 - VALIDATION_FRACTION))


def photographs():
    """The bundled photographs (scikit-image's), uint8 RGB arrays, one by one."""
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


def _grid(shape, stride, size):
    rows = range(0, shape[0] - size + 1, stride)
    cols = range(0, shape[1] - size + 1, stride)
    return [(r, c) for r in rows for c in cols]


def _grid_patches(image, stride, size):
    patches = [
        image[r : r + size, c : c + size] for r, c in _grid(image.shape, stride, size)
    ]
    # A region smaller than a patch at this scale contributes none.
    return np.asarray(patches, dtype=np.uint8).reshape(-1, size, size, 3)
