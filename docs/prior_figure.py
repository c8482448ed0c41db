"""The picture of docs/prior.md: validation patches of one class, their
reconstructions and the prior's samples of that class.

    python docs/prior_figure.py MODEL.keras SAMPLES_DIR CLASS_ID OUT.png
"""

import sys

import keras
import matplotlib
import numpy as np

import keras_dvq  # noqa: F401
from keras_dvq.data.sample import PHOTOGRAPHS
from keras_dvq.data.sample import load_sample_patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

model_path, samples_dir, class_id, out = sys.argv[1:5]
class_id = int(class_id)
images, labels = load_sample_patches("validation", return_labels=True)
chosen = np.flatnonzero(labels == class_id)
chosen = chosen[np.linspace(0, len(chosen) - 1, 8).astype(int)]
real = images[chosen]
model = keras.models.load_model(model_path, compile=False)
recon = np.round(np.clip(model.predict(real, verbose=0), 0, 1) * 255).astype(np.uint8)
samples = np.load(f"{samples_dir}/samples.npy")[:8]
rows = [
    ("validation", real),
    ("reconstructed", recon),
    ("sampled", samples),
]
figure, axes = plt.subplots(3, 8, figsize=(8 * 0.9, 3 * 1.05))
for row, (title, pictures) in enumerate(rows):
    for column in range(8):
        axis = axes[row, column]
        axis.imshow(pictures[column], interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
    axes[row, 0].set_ylabel(title, fontsize=8)
figure.suptitle(
    f"class {class_id} ({PHOTOGRAPHS[class_id]}), 32x32 patches", fontsize=9
)
figure.tight_layout()
figure.savefig(out, dpi=110)
