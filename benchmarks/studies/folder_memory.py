"""Peak memory and time to the first step of `train.py` on image folders of
growing size: the streaming pipeline's memory must not grow with the folder.

    python -m benchmarks.studies.folder_memory write DIR --count 20000
    python -m benchmarks.studies.folder_memory measure DIR [--image_size 256]
        [--steps 3] [--batch_size 4]

`write` fills DIR with COUNT distinct JPEG files: crops of `sample`'s
photographs at random places and scales, flipped at random, 288-400 px on
the shorter side (seed 0), so that a 256-px training run resizes and crops
each one. `measure` runs `keras_dvq.training.train_tokenizer` on
`folder:DIR` (the DeepMind network, `--steps` steps, validation on the whole
validation split) in this process and prints one line: the files, the peak
RSS of the process, the seconds from the start of the call to the end of the
first training step, and the load average. Run each folder in its own
process: peak RSS never goes down. docs/real_sizes.md reads them.
"""

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput


def write_folder(directory, count, seed=0):
    """`count` JPEG crops of `sample`'s photographs in a new `directory`."""
    from PIL import Image

    from keras_dvq.data.sample import photographs

    os.makedirs(directory)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(photo) for photo in photographs()]
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        side = int(rng.integers(min(width, height) // 2, min(width, height) + 1))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - int(0.75 * side) + 1))
        bottom = min(height, top + int(side * rng.uniform(0.75, 1.0)))
        crop = photo.crop((left, top, left + side, bottom))
        scale = int(rng.integers(288, 401)) / min(crop.size)
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(os.path.join(directory, f"{index:05d}.jpg"), quality=90)


def measure(args):
    from benchmarks.throughput import StepTimer
    from keras_dvq.training import TrainingConfig
    from keras_dvq.training import train_tokenizer

    files = sum(len(names) for _, _, names in os.walk(args.directory))
    timer = StepTimer()  # the end of each training step
    with tempfile.TemporaryDirectory() as out:
        config = TrainingConfig(
            out=os.path.join(out, "run"),
            dataset=f"folder:{args.directory}",
            image_size=args.image_size,
            batch_size=args.batch_size,
            max_steps=args.steps,
        )
        start = time.perf_counter()
        train_tokenizer(config, callbacks=[timer])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"{files} files at {args.image_size} px: peak RSS {peak:,.0f} MB, "
        f"first step after {timer.times[0] - start:.1f} s, load {load}"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("action", choices=["write", "measure"])
    add("directory")
    add("--count", type=cli.positive_int, default=2000, help="files to write")
    add("--image_size", type=cli.positive_int, default=256)
    add("--steps", type=cli.positive_int, default=3)
    add("--batch_size", type=cli.positive_int, default=4)
    return parser.parse_args(argv)


def run(args):
    if args.action == "write":
        if os.path.exists(args.directory):
            raise BadInput(f"DIR {args.directory}: exists; give a new directory.")
        write_folder(args.directory, args.count)
    else:
        measure(args)


def main(argv=None):
    return cli.run("folder_memory.py", parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
