"""The rate-distortion plot of docs/quantizers.md, drawn from its tables.

    python -m benchmarks.studies.quantizer_figure docs/quantizers.md \\
        docs/images/quantizers_rate_distortion.png

Every row of every Markdown table in the document with a `PSNR dB` and a
`bits/image` column is a point (PSNR against bits per image), coloured by
its quantizer (the label's first word: vq, fsq, lfq, rvq; `reference ...`
rows, from vector-quantize-pytorch's quantizers in the PyTorch loop, are
hollow), so the plot holds exactly what the tables say. Rows that repeat
another table's ("..., from the first table") are drawn once, and the
tables under a heading with `--skip` in it (by default the runs with the
original, undecayed learning rate: another schedule) are left out.
"""

import argparse
import re

from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput

FAMILIES = ("vq", "fsq", "lfq", "rvq")
COLOURS = {"vq": "tab:blue", "fsq": "tab:orange", "lfq": "tab:green", "rvq": "tab:red"}
FLOOR_DB = 20.0  # PSNRs under it are a collapse, drawn on the bottom edge
KEY_LINE_INCHES = 0.125  # one line of the 7-point key, with its spacing
KEY_WIDTH = 80  # characters of a key line: what fits right of the axes
REPEATED = re.compile(r",? from the (first |)table( below| above|)")


def table_points(markdown, skip=("original learning rate",)):
    """`[{"label", "family", "reference", "psnr", "bits_per_image",
    "section"}]` from the document's tables, in order."""
    points, section, columns, in_code = [], "", None, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("#"):
            section, columns = line.lstrip("#").strip(), None
            continue
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            columns = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue  # the header's rule
        if "PSNR dB" not in columns or "bits/image" not in columns:
            continue
        if any(word in section.lower() for word in skip) or REPEATED.search(cells[0]):
            continue
        label = cells[0].replace("**", "")
        words = re.findall(r"[a-z]+", label.lower())
        reference = words[0] == "reference"
        family = words[1] if reference else words[0]
        if family not in FAMILIES:
            raise BadInput(
                f"table row {label!r} ({section}): the label must start with "
                f"one of {FAMILIES} or 'reference' and one of them"
            )
        points.append(
            {
                "label": label,
                "family": family,
                "reference": reference,
                "psnr": float(cells[columns.index("PSNR dB")]),
                "bits_per_image": float(cells[columns.index("bits/image")]),
                "section": section,
            }
        )
    return points


def figure_of(points, floor=FLOOR_DB, title=None):
    """A matplotlib `Figure`: one point per table row, numbered, with a key
    of the numbers beside it. Points under `floor` dB (a collapsed run)
    sit on the bottom edge as triangles, their PSNR in the key."""
    from matplotlib.figure import Figure

    shown = [point["psnr"] for point in points if point["psnr"] >= floor]
    bottom = min(shown) - 1.0 if shown else floor
    key = "\n".join(
        f"{number:>2}  {point['label']}"[:KEY_WIDTH]
        + (f" ({point['psnr']:.2f} dB, below)" if point["psnr"] < bottom else "")
        for number, point in enumerate(points, 1)
    )
    if any(point["reference"] for point in points):
        key += "\n\nhollow: reference (vector-quantize-pytorch, PyTorch loop)"
    # The figure grows with its key past 6 inches, so that the key never runs
    # off the bottom edge: its lines and one line of margin below.
    key_lines = key.count("\n") + 2
    height = max(6.0, round(key_lines * KEY_LINE_INCHES / 0.9, 1))
    figure = Figure(figsize=(11.5, height), dpi=100)
    axes = figure.add_axes((0.07, 0.6 / height, 0.48, 1 - 1.08 / height))
    for number, point in enumerate(points, start=1):
        colour = COLOURS[point["family"]]
        below = point["psnr"] < bottom
        axes.scatter(
            point["bits_per_image"],
            max(point["psnr"], bottom),
            marker="v" if below else "o",
            clip_on=False,
            s=40,
            zorder=3,
            facecolors="none" if point["reference"] else colour,
            edgecolors=colour,
            label=point["family"],
        )
        axes.annotate(
            str(number),
            (point["bits_per_image"], max(point["psnr"], bottom)),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=7,
        )
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    axes.set_xlabel("rate: bits per image (code entropy x tokens per image)")
    axes.set_ylabel("PSNR (dB, mean over images)")
    axes.set_title(
        title or "sample, --lr_decay run, 1,500 steps unless the key names more",
        fontsize=10,
    )
    axes.grid(True, alpha=0.3)
    axes.set_ylim(bottom=bottom)
    figure.text(
        0.57,
        1 - 0.48 / height,
        key,
        va="top",
        ha="left",
        fontsize=7,
        family="monospace",
    )
    return figure


def run_study(args):
    from keras_dvq.evaluation.plots import save_figure

    with open(args.document) as file:
        points = table_points(file.read(), skip=tuple(args.skip))
    if not points:
        raise BadInput(f"{args.document}: no table with PSNR dB and bits/image")
    save_figure(figure_of(points), args.output)
    print(f"wrote {args.output}: {len(points)} points")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", help="the Markdown file (docs/quantizers.md)")
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument(
        "--skip",
        action="append",
        default=["original learning rate"],
        help="leave out the tables under headings containing this (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    return cli.run("quantizer_figure", parse_args, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
