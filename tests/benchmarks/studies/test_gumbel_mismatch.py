"""benchmarks.studies.gumbel_mismatch on the tiny saved Gumbel and VQ models."""

import math
import re
from pathlib import Path

from benchmarks.studies import gumbel_mismatch

SAVED = Path(__file__).parents[2] / "fixtures" / "saved"


def test_prints_four_reconstructions_of_a_gumbel_model_one_of_a_vq(capsys):
    paths = [str(SAVED / "gumbel.keras"), str(SAVED / "vqvae.keras")]
    assert gumbel_mismatch.main([*paths, "--max_batches", "1"]) == 0
    gumbel, vq = capsys.readouterr().out.split(paths[1])
    names = re.findall(r"^  (.+?)\s+PSNR\s+(\S+) dB$", gumbel, re.M)
    assert [name for name, _ in names][::2] == ["argmax", "soft, T=1"]
    assert names[1][0].startswith("soft, T=") and names[3][0] == "Gumbel sample"
    assert all(math.isfinite(float(value)) for _, value in names)
    entropy, top = map(
        float, re.search(r"entropy per position (\S+) nats, .* (\S+)$", gumbel).groups()
    )
    # 16 codes: the entropy lies in [0, log 16], the top probability in
    # [1/16, 1].
    assert 0 <= entropy <= math.log(16) + 1e-4 and 1 / 16 <= top <= 1
    assert re.findall(r"^  (\w+)\s+PSNR", vq, re.M) == ["argmax"]
    assert "entropy" not in vq
