"""The command-line flags of the original repo's model and data, shared by
every script that trains a tokenizer.
"""

from keras_dvq.models.flavors import ENCODER_DECODERS
from keras_dvq.utils.cli import positive_int


def add_model_flags(parser):
    """Adds the original repo's model and data flags (all but `--vq_flavor`)
    and `--dataset`, `--seed` to an argparse parser."""
    add = parser.add_argument
    add(
        "--enc_dec_flavor",
        choices=ENCODER_DECODERS.choices,
        type=ENCODER_DECODERS.flag_type,
        default="deepmind",
    )
    add("--loss_flavor", choices=["l2", "logit_laplace"], default="l2")
    add("--num_embeddings", type=positive_int, default=512)
    add("--embedding_dim", type=positive_int, default=64)
    add("--n_hid", type=positive_int, default=64)
    add("--batch_size", type=positive_int, default=128)
    add("--data_dir", default=None, help="tensorflow-datasets data directory")
    add("--dataset", default="cifar10", help="sample | folder:PATH | a tfds name")
    add("--seed", type=int, default=0)
