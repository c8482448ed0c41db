"""Converts a diffusers `VQModel` (taming's VQGAN) into a keras-dvq `.keras`.

    python scripts/convert_vqgan.py vqgan_f16/ runs/vqgan/model.keras

reads a `save_pretrained` directory (config.json +
diffusion_pytorch_model.safetensors; torch and diffusers are not needed,
safetensors is: `pip install 'keras-dvq[convert]'`) and writes a `VQVAE`
(`"vq"` quantizer, `"vqgan"` encoder/decoder) whose `encode` and `decode`
give diffusers' token ids and reconstructions on [0, 1] images
(docs/vqgan_conversion.md).
"""

import argparse
import sys
from pathlib import Path

from keras_dvq.export.diffusers_vqgan import load_vq_model
from keras_dvq.utils import atomic
from keras_dvq.utils import cli
from keras_dvq.utils.errors import BadInput


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a diffusers VQModel into a keras-dvq .keras file."
    )
    parser.add_argument("src", help="a diffusers VQModel save_pretrained directory")
    parser.add_argument("out", help="the .keras file to write")
    return parser.parse_args(argv)


def convert(args):
    out = Path(args.out)
    if out.suffix != ".keras":
        raise BadInput(f"OUT {out}: expected a path ending in .keras")
    if out.exists():
        raise BadInput(f"OUT {out}: exists; conversions never overwrite a file")
    model = load_vq_model(args.src)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_model(model, out)  # a kill leaves no torn OUT
    print(
        f"wrote {out}: {model.quantizer.vocabulary_size} codes, stride "
        f"{model.stride}, {model.count_params()} parameters"
    )


def main(argv=None):
    return cli.run("convert_vqgan.py", parse_args, convert, argv)


if __name__ == "__main__":
    sys.exit(main())
