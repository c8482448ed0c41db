import pytest
from PIL import Image

from benchmarks.studies import quantizer_figure
from keras_dvq.utils.errors import BadInput

DOCUMENT = """# Quantizers

## At equal rate

```
# a comment in a command block is no heading
python scripts/train.py --out runs/q31/vq1024
```

| model | PSNR dB | SSIM | bits/image |
|---|---|---|---|
| vq (1,024 codes) | 34.90 | 0.84 | 546 |
| **fsq (8,5,5,5)**, feature normalization | 32.17 | 0.79 | 314 |

### The reference

| model (seed 0) | PSNR dB | bits/image |
|---|---|---|
| reference LFQ (10 bits) | 5.94 | 0 |

| step | ms per step |
|---|---|
| plain | 396 |

## Each at its default size

| model | PSNR dB | bits/image |
|---|---|---|
| vq (1,024 codes), from the first table | 34.90 | 546 |
| rvq (4 x 512), seed 1 | 35.99 | 1948 |

### With the original learning rate (no decay)

| model | PSNR dB | bits/image |
|---|---|---|
| vq | 34.85 | 492 |
"""


def test_every_table_row_is_a_point_once():
    points = quantizer_figure.table_points(DOCUMENT)
    assert [
        (p["family"], p["reference"], p["psnr"], p["bits_per_image"]) for p in points
    ] == [
        ("vq", False, 34.90, 546.0),
        ("fsq", False, 32.17, 314.0),
        ("lfq", True, 5.94, 0.0),
        ("rvq", False, 35.99, 1948.0),
    ]
    assert points[1]["label"] == "fsq (8,5,5,5), feature normalization"
    assert points[2]["section"] == "The reference"
    # Nothing skipped: the undecayed table's row joins.
    assert len(quantizer_figure.table_points(DOCUMENT, skip=())) == 5


def test_a_row_of_no_known_quantizer_is_refused():
    document = (
        "| model | PSNR dB | bits/image |\n|---|---|---|\n| gumbel | 28.7 | 219 |\n"
    )
    with pytest.raises(BadInput, match="'gumbel'.*must start with one of"):
        quantizer_figure.table_points(document)


def test_the_figure_is_written(tmp_path, capsys):
    document = tmp_path / "quantizers.md"
    document.write_text(DOCUMENT)
    output = tmp_path / "rd.png"
    assert quantizer_figure.main([str(document), str(output)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {output}: 4 points"
    with Image.open(output) as picture:
        assert picture.size == (1150, 600)
    empty = tmp_path / "empty.md"
    empty.write_text("# nothing\n")
    assert quantizer_figure.main([str(empty), str(output)]) == 2
    assert "no table with PSNR dB and bits/image" in capsys.readouterr().err


@pytest.mark.parametrize("count", [4, 60])
def test_the_key_stays_inside_the_figure(count):
    points = [
        {
            "label": f"vq, a row of a long table, number {n}" + ", and more" * 8,
            "family": "vq",
            "reference": n == 0,
            "psnr": 30.0 + n / 10,
            "bits_per_image": 500.0 + n,
            "section": "",
        }
        for n in range(count)
    ]
    figure = quantizer_figure.figure_of(points)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    (key,) = figure.texts
    extent = key.get_window_extent(renderer)
    assert key.get_text().count("\n") == count + 1
    assert 0 <= extent.y0 and extent.y1 <= figure.bbox.height
    assert extent.x1 <= figure.bbox.width  # long labels are cut to fit
    # Six inches while the key fits in them, taller when it does not.
    assert (figure.get_size_inches()[1] == 6.0) == (count == 4)
