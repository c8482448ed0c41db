"""Uses an exported tokenizer as TF Serving would: TensorFlow only.

    python tests/export/serving_client.py EXPORT_DIR IMAGES.npy RESULTS.npz

Run in a fresh process by test_export.py. keras_dvq is made unimportable, to
show the export does not need it (keras cannot be kept out: TensorFlow 2.16+
imports it on `import tensorflow`).
"""

import json
import os
import sys

sys.modules["keras_dvq"] = None  # any `import keras_dvq` now fails

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(export_dir, images_path, results_path):
    tokenizer = tf.saved_model.load(export_dir)
    encode = tokenizer.signatures["encode"]
    decode = tokenizer.signatures["decode"]
    serving_default = tokenizer.signatures["serving_default"]
    with open(
        os.path.join(export_dir, "assets.extra", "keras_dvq_tokenizer.json")
    ) as f:
        num_embeddings = json.load(f)["num_embeddings"]
    images = np.load(images_path)

    tokens = encode(images=tf.constant(images))["tokens"].numpy()
    one_by_one = [encode(images=tf.constant(image[None]))["tokens"] for image in images]
    decoded = decode(tokens=tf.constant(tokens))["images"].numpy()
    errors = {}
    for name, bad_id in (("too_large", num_embeddings), ("negative", -1)):
        bad = tokens[:2].copy()
        bad[1, 0, 0] = bad_id
        try:
            decode(tokens=tf.constant(bad))
            errors[name] = "no error"
        except tf.errors.InvalidArgumentError as error:
            errors[name] = error.message
    np.savez(
        results_path,
        tokens=tokens,
        tokens_one_by_one=np.concatenate([t.numpy() for t in one_by_one]),
        serving_default=serving_default(images=tf.constant(images))["tokens"].numpy(),
        decoded=decoded,
        errors=json.dumps(errors),
        keras_dvq_modules=json.dumps(
            sorted(m for m in sys.modules if m.startswith("keras_dvq."))
        ),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
