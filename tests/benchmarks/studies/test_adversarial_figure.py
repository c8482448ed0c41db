import csv

from PIL import Image

from benchmarks.studies import adversarial_figure


def write_run(directory, rows):
    directory.mkdir()
    with open(directory / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(directory)


def test_runs_are_read_with_and_without_a_discriminator(tmp_path):
    plain = write_run(
        tmp_path / "plain",
        [{"epoch": 0, "val_psnr": 27.4}, {"epoch": 1, "val_psnr": 30.1}],
    )
    rows = [
        {"epoch": e, "val_psnr": p, "adv_weight": w, "logits_real": r, "logits_fake": f}
        for e, p, w, r, f in [
            (0, 27.0, 0.0, 0.3, 0.3),
            (1, 29.5, 0.001, 0.5, -0.2),
            (2, 28.0, 0.002, 1.5, -1.4),
        ]
    ]
    gan = write_run(tmp_path / "gan", rows)
    run = adversarial_figure.read_run(plain)
    assert run["epochs"] == [1, 2] and run["logits_real"] is None
    run = adversarial_figure.read_run(gan)
    assert run["name"] == "gan" and run["val_psnr"] == [27.0, 29.5, 28.0]
    assert run["logits_fake"] == [0.3, -0.2, -1.4]
    assert run["first_adversarial_epoch"] == 2
    out = tmp_path / "curves.png"
    assert adversarial_figure.main([plain, gan, "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.size == (1100, 420)


def test_a_directory_without_metrics_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "curves.png"
    code = adversarial_figure.main([str(tmp_path / "nothing"), "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("nothing: no metrics.csv (not a train.py run)")
    assert len(error.splitlines()) == 1 and not out.exists()
