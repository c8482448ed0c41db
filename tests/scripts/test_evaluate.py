"""scripts/evaluate.py: the yardstick's table, JSON and pictures, and bad input."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from keras_dvq.data.datasets import load_dataset
from keras_dvq.evaluation import fid
from keras_dvq.evaluation import measures as evaluation
from keras_dvq.evaluation.lpips import LPIPS
from keras_dvq.evaluation.lpips import LPIPS_CHANNELS
from keras_dvq.evaluation.lpips import load_lpips
from keras_dvq.export.saved_model import export_tokenizer
from keras_dvq.models import VQVAE
from tests.testing import image_folder
from tests.testing import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("evaluate")


@pytest.fixture(scope="module")
def sample_images(sample_validation_images):
    return sample_validation_images[:1000]


@pytest.fixture(scope="module")
def dataset(sample_images, tmp_path_factory):
    """A folder of 1,000 of `sample`'s patches, 100 of which validate: a
    whole split in batches of 32 ends on a partial batch. (All of `sample`'s
    4,250 took the table, the pictures and the independent computation a
    minute and a half on each backend.)"""
    root = tmp_path_factory.mktemp("data") / "sample_patches"
    return image_folder(root, images=sample_images)


@pytest.fixture(scope="module")
def validation_images(dataset):
    return np.concatenate(list(load_dataset(dataset, "validation", shuffle=False)))


@pytest.fixture(scope="module")
def model_paths(tiny_tokenizer_factory, tmp_path_factory):
    """The session's trained tokenizers of 16 and 32 codes, as small/ and
    large/ (the labels name the folders)."""
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for name, num_embeddings in (("small", 16), ("large", 32)):
        path = folder / name / "model.keras"
        path.parent.mkdir()
        shutil.copy(tiny_tokenizer_factory(num_embeddings), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def evaluated(script, model_paths, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    argv = [*map(str, model_paths), "--dataset", dataset, "--out", str(out)]
    argv += ["--batch_size", "32"]
    assert script.main([*argv, "--quiet"]) == 0
    with open(out / "evaluation.json") as file:
        return out, json.load(file)


def test_json_rows_agree_with_an_independent_computation(
    evaluated, model_paths, dataset, validation_images
):
    out, results = evaluated
    assert results["dataset"] == dataset and results["split"] == "validation"
    assert results["command"].startswith("python scripts/evaluate.py ")
    rows = results["models"]
    assert [row["label"] for row in rows] == ["small/model", "large/model"]
    originals = validation_images.astype(np.float64) / 255.0
    for row, path in zip(rows, model_paths, strict=True):
        model = keras.models.load_model(path)
        tokens = model.encode(validation_images)
        recon = model.decode(tokens).astype(np.float64)
        mse = ((originals - recon) ** 2).mean(axis=(1, 2, 3))
        assert row["num_images"] == len(validation_images) == 100
        assert row["mse"] == pytest.approx(mse.mean(), rel=1e-4)
        assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), abs=0.01)
        assert row["psnr_of_mean_mse"] == pytest.approx(
            10 * np.log10(1 / mse.mean()), abs=0.01
        )
        independent_ssim = tf.image.ssim(
            tf.constant(originals), tf.constant(recon), max_val=1.0
        ).numpy()
        assert row["ssim"] == pytest.approx(independent_ssim.mean(), abs=1e-3)
        weights = np.array([0.0448, 0.2856])  # the 2 of 5 scales that fit 32 px
        independent_ms_ssim = tf.image.ssim_multiscale(
            tf.constant(originals),
            tf.constant(recon),
            max_val=1.0,
            power_factors=weights / weights.sum(),
        ).numpy()
        assert row["ms_ssim_scales"] == 2
        assert row["ms_ssim"] == pytest.approx(independent_ms_ssim.mean(), abs=1e-3)
        gmsd = keras.ops.convert_to_numpy(evaluation.gmsd(originals, recon))
        assert row["gmsd"] == pytest.approx(gmsd.mean(), rel=1e-3)
        laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, :, :, None]
        energy = [  # per image and channel, interior pixels
            np.mean(ndimage.convolve(images, laplacian)[:, 1:-1, 1:-1] ** 2)
            for images in (recon, originals)
        ]
        assert row["sharpness_ratio"] == pytest.approx(energy[0] / energy[1], rel=1e-3)
        counts = np.bincount(tokens.ravel(), minlength=row["vocabulary_size"])
        probs = counts[counts > 0] / counts.sum()
        bits = -(probs * np.log2(probs)).sum()
        assert row["codes_used"] == (counts > 0).sum()
        assert row["bits_per_token"] == pytest.approx(bits, rel=1e-5)
        assert row["bits_per_image"] == pytest.approx(bits * 64, rel=1e-5)
        assert row["perplexity"] == pytest.approx(2**bits, rel=1e-4)
        logs = model.evaluate(  # as train.py reports it: the same batches
            load_dataset(dataset, "validation", batch_size=32, shuffle=False),
            return_dict=True,
            verbose=0,
        )
        assert row["recon_loss"] == pytest.approx(logs["recon_loss"], rel=1e-4)
        assert row["images_per_second"] > 0
    assert rows[0]["vocabulary_size"] == 16 and rows[1]["vocabulary_size"] == 32


def test_pictures_are_written(evaluated):
    out, results = evaluated
    names = [row["reconstructions_png"] for row in results["models"]]
    assert names == [
        "reconstructions-small-model.png",
        "reconstructions-large-model.png",
    ]
    assert results["rate_distortion_png"] == "rate_distortion.png"
    assert results["reconstructions_png"] == "reconstructions.png"
    for name in [*names, "rate_distortion.png"]:
        with Image.open(out / name) as picture:
            assert picture.format == "PNG"
            assert picture.width >= 400 and picture.height >= 200
    # Side by side: originals and each model's, 16 images of 32 px enlarged
    # 4x in a row, three rows.
    with Image.open(out / "reconstructions.png") as picture:
        assert picture.width >= 16 * 32 * 4 and picture.height >= 3 * 32 * 4
        assert picture.width > 3 * picture.height


def test_table_is_printed_and_progress_can_be_silenced(
    script, model_paths, tmp_path, capsys
):
    dataset = image_folder(tmp_path / "images", count=80)  # 8 validate
    assert script.main([str(model_paths[0]), "--dataset", dataset]) == 0
    printed = capsys.readouterr().out
    assert "8/8" in printed  # the progress line of a non-terminal
    header, row = printed.splitlines()[-2:]
    assert "PSNR dB" in header and "bits/image" in header
    assert "MS-SSIM" in header and "GMSD" in header and "sharpness" in header
    assert "LPIPS" not in header and "rFID" not in header  # no weights given
    assert row.split()[0].endswith("small/model") and " / 16 " in row
    assert script.main([str(model_paths[0]), "--dataset", dataset, "--quiet"]) == 0
    assert "8/8" not in capsys.readouterr().out


def test_an_exported_tokenizer_is_evaluated_like_its_model(
    script, model_paths, tmp_path
):
    model = keras.models.load_model(model_paths[0])
    export_tokenizer(model, str(tmp_path / "export" / "1"), image_shape=(32, 32, 3))
    dataset = image_folder(tmp_path / "images", count=80)
    rows = []
    for source in (model_paths[0], tmp_path / "export"):
        out = tmp_path / f"out-{len(rows)}"
        argv = [str(source), "--dataset", dataset, "--out", str(out), "--quiet"]
        assert script.main(argv) == 0
        with open(out / "evaluation.json") as file:
            rows.append(json.load(file)["models"][0])
    keras_row, row = rows
    assert row["recon_loss"] is None
    assert row["backend"] == "tensorflow (SavedModel)"
    # Served images are uint8: their PSNR differs by the rounding only.
    assert row["psnr"] == pytest.approx(keras_row["psnr"], abs=0.1)
    assert row["codes_used"] == keras_row["codes_used"]
    assert row["bits_per_token"] == pytest.approx(keras_row["bits_per_token"], abs=1e-3)
    assert "rate_distortion_png" not in json.load(open(out / "evaluation.json"))


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate.py: error: ") and "\n" not in err
    return err


def test_missing_and_corrupt_models(script, tmp_path, capsys):
    assert script.main([str(tmp_path / "nope.keras"), "--dataset", "sample"]) == 2
    assert "nope.keras: not found" in one_line_error(capsys)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    assert script.main([str(corrupt), "--dataset", "sample"]) == 2
    assert "corrupt.keras: cannot be loaded as a tokenizer" in one_line_error(capsys)
    assert not (tmp_path / "evaluation.json").exists()


def test_images_that_do_not_fit_the_model(script, model_paths, tmp_path, capsys):
    path = str(model_paths[0])
    argv = [path, "--dataset", "sample", "--image_size", "30", "--out", str(tmp_path)]
    assert script.main(argv) == 2
    error = one_line_error(capsys)
    assert f"--image_size 30: {path} downsamples by 4" in error
    assert not tmp_path.joinpath("evaluation.json").exists()
    gray = VQVAE.from_flavors(
        num_embeddings=8, embedding_dim=4, n_hid=8, image_channels=1
    )
    gray.build((None, 32, 32, 1))
    gray.save(tmp_path / "gray.keras")
    assert script.main([str(tmp_path / "gray.keras"), "--dataset", "sample"]) == 2
    assert "must have 1 channels" in one_line_error(capsys)
    assert not (tmp_path / "evaluation.json").exists()


def test_an_empty_split(script, model_paths, tmp_path, capsys):
    dataset = image_folder(tmp_path / "five", count=5)  # no 10th file validates
    assert script.main([str(model_paths[0]), "--dataset", dataset]) == 2
    assert "no readable" in one_line_error(capsys)


def test_a_model_is_evaluated_at_its_recorded_size(script, model_paths, tmp_path):
    """No flag: the size the model was trained at (32 for files older than
    that record); a flag may choose another size (fully convolutional)."""
    model = keras.models.load_model(model_paths[0])
    sized = VQVAE.from_config({**model.get_config(), "image_size": 16})
    sized.build((None, 16, 16, 3))
    sized.set_weights(model.get_weights())
    sized.save(tmp_path / "sized.keras")
    dataset = image_folder(tmp_path / "images", count=40)
    sizes = []
    for source, flags in (
        (tmp_path / "sized.keras", []),
        (tmp_path / "sized.keras", ["--image_size", "24"]),
        (model_paths[0], []),
    ):
        out = tmp_path / f"out-{len(sizes)}"
        argv = [str(source), "--dataset", dataset, "--out", str(out), "--quiet"]
        assert script.main([*argv, *flags]) == 0
        results = json.loads((out / "evaluation.json").read_text())
        sizes.append(results["models"][0]["image_size"])
    assert sizes == [16, 24, 32]


@pytest.fixture(scope="module")
def perceptual_weights(tmp_path_factory):
    """Random LPIPS and InceptionV3 weights in the files users give: a
    Keras VGG16 notop file, LPIPS heads as .npz, a Keras InceptionV3 notop
    file (at the small input the test uses)."""
    folder = tmp_path_factory.mktemp("perceptual")
    keras.utils.set_random_seed(3)
    lpips = LPIPS()
    vgg, heads = str(folder / "vgg16.weights.h5"), str(folder / "heads.npz")
    lpips.vgg.save_weights(vgg)
    rng = np.random.default_rng(3)
    np.savez(
        heads,
        **{f"lin{i}": rng.uniform(0, 0.1, c) for i, c in enumerate(LPIPS_CHANNELS)},
    )
    inception = str(folder / "inception.weights.h5")
    fid.inception_features(75).get_layer("inception_v3").save_weights(inception)
    return vgg, heads, inception


@pytest.mark.slow  # two ImageNet networks on every backend: 20-60 s
def test_lpips_and_rfid_with_weights_files(
    script, model_paths, perceptual_weights, tmp_path, capsys
):
    vgg, heads, inception = perceptual_weights
    dataset = image_folder(tmp_path / "images", count=80)  # 8 validate
    out = tmp_path / "out"
    argv = [str(model_paths[0]), "--dataset", dataset, "--out", str(out), "--quiet"]
    argv += ["--vgg_weights", vgg, "--lpips_weights", heads]
    argv += ["--inception_weights", inception, "--inception_size", "75"]
    assert script.main(argv) == 0
    header = capsys.readouterr().out.splitlines()[-2]
    assert "LPIPS" in header and "rFID" in header
    results = json.loads((out / "evaluation.json").read_text())
    assert results["lpips_weights"] == {
        "vgg": vgg,
        "heads": heads,
        "preprocessing": "caffe",
    }
    row = results["models"][0]
    images = np.concatenate(list(load_dataset(dataset, "validation", shuffle=False)))
    model = keras.models.load_model(model_paths[0])
    recon = model.decode(model.encode(images))
    originals = images.astype("float32") / 255.0
    lpips = load_lpips(vgg, heads)
    # predict, as the script: one compiled function (JAX compiles eager
    # calls op by op, a minute for two ImageNet networks).
    expected = lpips.predict((originals, recon), verbose=0).mean()
    assert row["lpips"] == pytest.approx(float(expected), rel=1e-4)
    features = fid.load_inception(inception, 75)
    # 8 images of 2,048 features: the route through the features (equal to
    # scipy's, tests/evaluation/test_fid.py) is seconds faster than eigh.
    expected = fid.frechet_distance_of_features(
        *(features.predict(x, verbose=0) for x in (originals, recon))
    )
    assert row["rfid"] == pytest.approx(expected, rel=1e-3)


def test_perceptual_weights_that_cannot_be_used(script, model_paths, tmp_path, capsys):
    path = str(model_paths[0])
    out = tmp_path / "out"
    for flags, words in (
        (["--vgg_weights", str(tmp_path / "nope.pth")], "--vgg_weights"),
        (["--inception_weights", str(tmp_path / "no.h5")], "--inception_weights"),
    ):
        argv = [path, "--dataset", "no-such-dataset", "--out", str(out), *flags]
        assert script.main(argv) == 2  # before the dataset is even looked at
        error = one_line_error(capsys)
        assert words in error and "not found" in error
    argv = [path, "--dataset", "sample", "--image_size", "12", "--vgg_weights", "x"]
    assert script.main([*argv, "--out", str(out)]) == 2
    assert "--image_size 12: LPIPS needs images of at least 16 px" in one_line_error(
        capsys
    )
    assert not out.exists()
