"""keras_dvq.evaluation.lpips: the formula against NumPy and PyTorch, the
`lpips` package itself where installed, gradients and weight loading, all
with random weights (no test downloads anything)."""

import importlib.util
import sys
import types

import keras
import numpy as np
import pytest
from keras import ops

from keras_dvq.evaluation import lpips as lpips_module
from keras_dvq.evaluation.lpips import LPIPS
from keras_dvq.utils.errors import BadInput
from tests.testing import gradients

SIZE = 16  # the least LPIPS takes (relu5_3 at 1x1): the cheapest real test


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.fixture(scope="module")
def model():
    """An LPIPS of random weights: He-scaled convolutions (activations keep
    their size through 13 layers) and random non-negative heads."""
    keras.utils.set_random_seed(0)
    lpips = LPIPS()
    rng = np.random.default_rng(0)
    for layer in lpips.vgg.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            std = np.sqrt(2.0 / np.prod(kernel.shape[:3]))
            layer.set_weights(
                [
                    rng.normal(0, std, kernel.shape).astype("float32"),
                    rng.normal(0, 0.1, bias.shape).astype("float32"),
                ]
            )
    for head in lpips.heads:
        head.set_weights([rng.uniform(0, 0.1, head.kernel.shape).astype("float32")])
    return lpips


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, SIZE, SIZE, 3)).astype("float32")
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype("float32")
    return x, y


def numpy_lpips(model, x, y, preprocessing="lpips"):
    """LPIPS written out in NumPy (float64) from the paper and lpips.py."""
    convolutions = [
        [np.float64(w) for w in layer.get_weights()]
        for layer in model.vgg.layers
        if "conv" in layer.name
    ]
    taps = {1, 3, 6, 9, 12}  # relu1_2 .. relu5_3: 2nd, 4th, 7th, 10th, 13th
    pools = {1, 3, 6, 9}  # 2x2 max pooling after these convolutions

    def features(images):
        if preprocessing == "lpips":
            h = (2 * images - 1 - np.array([-0.030, -0.088, -0.188])) / np.array(
                [0.458, 0.448, 0.450]
            )
        else:
            h = images[..., ::-1] * 255 - np.array([103.939, 116.779, 123.68])
        out = []
        for index, (kernel, bias) in enumerate(convolutions):
            padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), (1, 2))
            # windows: (N, H, W, C, 3, 3); kernel: (3, 3, C, out)
            h = np.maximum(np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias, 0)
            if index in taps:
                out.append(h)
            if index in pools:
                n, height, width, c = h.shape
                h = h.reshape(n, height // 2, 2, width // 2, 2, c).max(axis=(2, 4))
        return out

    distance = 0.0
    for head, a, b in zip(model.heads, features(x), features(y), strict=True):
        a = a / (np.sqrt((a**2).sum(-1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b**2).sum(-1, keepdims=True)) + 1e-10)
        weights = np.float64(head.get_weights()[0]).reshape(-1)
        distance = distance + (((a - b) ** 2) @ weights).mean(axis=(1, 2))
    return distance


def test_lpips_matches_numpy(model, pair):
    x, y = pair
    ours = numpy(model((x, y)))
    assert ours.shape == (2,)
    np.testing.assert_allclose(ours, numpy_lpips(model, x, y), rtol=1e-4)
    assert ours.min() > 1e-3  # a real distance, not a degenerate 0
    np.testing.assert_allclose(numpy(model((x, x))), 0.0, atol=1e-7)
    caffe = LPIPS(preprocessing="caffe")
    caffe.set_weights(model.get_weights())
    np.testing.assert_allclose(
        numpy(caffe((x, y))), numpy_lpips(model, x, y, "caffe"), rtol=1e-4
    )


@pytest.mark.slow  # JAX differentiates VGG16 op by op: ~30 s on a loaded VM
def test_lpips_gradients_are_finite_and_match_finite_differences(model, pair):
    x, y = pair
    target = keras.Variable(y, dtype="float32")

    def total():
        return ops.sum(model((ops.convert_to_tensor(x), target.value)))

    (gradient,) = gradients(total, [target])
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0
    # Towards the original: a direction along which the distance changes
    # well above float32's rounding of the finite difference.
    direction = (x - y) / np.linalg.norm(x - y)
    epsilon = 1e-2
    values = [
        float(
            numpy(model((x, (y + sign * epsilon * direction).astype("float32")))).sum()
        )
        for sign in (1, -1)
    ]
    finite_difference = (values[0] - values[1]) / (2 * epsilon)
    assert abs(finite_difference) > 1e-3
    assert np.sum(gradient * direction) == pytest.approx(finite_difference, rel=5e-3)
    assert not model.trainable_weights  # frozen: a loss, never trained


def torch_vgg16_features(torch):
    """torchvision's `vgg16().features` layout (conv 3x3 pad 1 + ReLU, max
    pooling), built here so that no torchvision is needed."""
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M"):
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
            channels = width
    for width in (512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
            channels = width
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory):
    """Random torchvision-layout VGG16 and lpips-layout heads, saved as the
    `.pth` files users give."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    features = torch_vgg16_features(torch)
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1
        for i, c in enumerate(lpips_module.LPIPS_CHANNELS)
    }
    folder = tmp_path_factory.mktemp("weights")
    vgg_path, heads_path = folder / "vgg16.pth", folder / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, vgg_path)
    torch.save(heads, heads_path)
    return torch, features, heads, str(vgg_path), str(heads_path)


def test_pth_files_load_and_match_pytorch(torch_weights, pair):
    """The `.pth` loaders (torchvision's VGG16, lpips' heads) against LPIPS
    computed in PyTorch as lpips.py does: NCHW, PyTorch convolutions."""
    torch, features, heads, vgg_path, heads_path = torch_weights
    x, y = pair
    ours = lpips_module.load_lpips(vgg_path, heads_path)
    assert ours.preprocessing == "lpips"
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    taps = {3, 8, 15, 22, 29}  # relu1_2 .. relu5_3 in vgg16().features
    outputs = []
    with torch.no_grad():
        for images in (x, y):
            h = (2 * torch.from_numpy(images).permute(0, 3, 1, 2) - 1 - shift) / scale
            taken = []
            for index, layer in enumerate(features[:30]):
                h = layer(h)
                if index in taps:
                    taken.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            outputs.append(taken)
        theirs = sum(
            torch.nn.functional.conv2d((a - b) ** 2, heads[f"lin{i}.model.1.weight"])
            .mean([2, 3])
            .flatten()
            for i, (a, b) in enumerate(zip(*outputs, strict=True))
        ).numpy()
    np.testing.assert_allclose(numpy(ours((x, y))), theirs, rtol=1e-4)


@pytest.mark.skipif(
    importlib.util.find_spec("lpips") is None, reason="the lpips package is absent"
)
def test_parity_with_the_lpips_package(torch_weights, pair, monkeypatch):
    """The `lpips` package's own LPIPS (its scaling, slices, normalisation,
    heads, averaging) on the same random weights. Its VGG16 comes from
    torchvision, which only provides the layer list: a stand-in module
    returns the same layout (torchvision's CPU-incompatible wheels cannot be
    imported beside this project's CPU PyTorch)."""
    torch, features, heads, vgg_path, heads_path = torch_weights
    stand_in = types.ModuleType("torchvision")
    stand_in.models = types.SimpleNamespace(
        vgg16=lambda *args, **kwargs: types.SimpleNamespace(features=features),
    )
    monkeypatch.setitem(sys.modules, "torchvision", stand_in)
    for name in [name for name in sys.modules if name.split(".")[0] == "lpips"]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    reference = lpips.LPIPS(
        net="vgg", pretrained=True, model_path=heads_path, verbose=False
    )
    x, y = pair
    with torch.no_grad():
        theirs = reference(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            torch.from_numpy(y).permute(0, 3, 1, 2),
            normalize=True,  # inputs in [0, 1]
        )
    ours = lpips_module.load_lpips(vgg_path, heads_path)
    np.testing.assert_allclose(
        numpy(ours((x, y))), theirs.numpy().reshape(-1), rtol=1e-4
    )


def test_npz_heads_and_keras_backbone_files(model, pair, tmp_path):
    x, y = pair
    backbone = str(tmp_path / "vgg16_notop.weights.h5")
    model.vgg.save_weights(backbone)
    heads = str(tmp_path / "heads.npz")
    np.savez(
        heads, **{f"lin{i}": h.get_weights()[0] for i, h in enumerate(model.heads)}
    )
    loaded = lpips_module.load_lpips(backbone, heads)
    assert loaded.preprocessing == "caffe"  # Keras' VGG16 weights are Caffe's
    loaded = lpips_module.load_lpips(backbone, heads, preprocessing="lpips")
    np.testing.assert_allclose(numpy(loaded((x, y))), numpy(model((x, y))), rtol=1e-6)


def test_missing_and_wrong_weights_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached Keras VGG16
    (tmp_path / "heads.pth").write_bytes(b"heads")
    (tmp_path / "vgg.h5").write_bytes(b"vgg")
    with pytest.raises(BadInput, match="VGG16 weights missing.*--vgg_weights FILE"):
        lpips_module.load_lpips(None, str(tmp_path / "heads.pth"))
    with pytest.raises(BadInput, match="--vgg_weights .*nope.pth: not found"):
        lpips_module.load_lpips(str(tmp_path / "nope.pth"), str(tmp_path / "h.npz"))
    with pytest.raises(BadInput, match="--lpips_weights .*h.npz: not found"):
        lpips_module.load_lpips(str(tmp_path / "vgg.h5"), str(tmp_path / "h.npz"))
    monkeypatch.setattr(lpips_module, "installed_lpips_heads", lambda: None)
    with pytest.raises(BadInput, match="LPIPS heads missing.*--lpips_weights FILE"):
        lpips_module.load_lpips(str(tmp_path / "vgg.h5"))
    # Without the lpips package too, a named file that is not there says so.
    with pytest.raises(BadInput, match="--vgg_weights .*nope.pth: not found"):
        lpips_module.load_lpips(str(tmp_path / "nope.pth"))
    wrong = tmp_path / "wrong.h5"
    wrong.write_bytes(b"not hdf5")
    heads = tmp_path / "heads.npz"
    np.savez(heads, lin0=np.ones(3))
    with pytest.raises(BadInput, match="--vgg_weights .*wrong.h5: not VGG16 weights"):
        lpips_module.load_lpips(str(wrong), str(heads))
    lpips = LPIPS()
    with pytest.raises(BadInput, match="--lpips_weights .*heads.npz: not LPIPS VGG"):
        lpips_module.load_lpips_heads(lpips, str(heads))
    for error in (BadInput, ValueError):
        assert issubclass(BadInput, error)


def test_keras_file_round_trip(model, pair, tmp_path):
    """Inside a saved model (e.g. a trainer's perceptual loss) it comes back
    with its weights, frozen."""
    x, y = pair
    model.save(tmp_path / "lpips.keras")
    loaded = keras.models.load_model(tmp_path / "lpips.keras")
    np.testing.assert_allclose(numpy(loaded((x, y))), numpy(model((x, y))), rtol=1e-6)
    assert not loaded.trainable_weights and loaded.preprocessing == "lpips"


def test_small_images_and_config(model):
    with pytest.raises(ValueError, match="at least 16x16"):
        model((np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3))))
    with pytest.raises(ValueError, match='"lpips" or "caffe"'):
        LPIPS(preprocessing="torch")
    config = LPIPS(preprocessing="caffe").get_config()
    assert LPIPS.from_config(config).preprocessing == "caffe"
