"""The benchmark's results: the ratios each row reports, the JSON and the table.

No Keras here: the parent process formats the report without a backend.
"""

import json
import os
import platform
import statistics

from benchmarks.config import LARGE


def window_ratios(windows):
    """A model's medians and ratios from its timed windows (images/s).

    Args:
        windows: dict of lists of images/s, one value per round: `train`
            (the model), `identity` (its identity-bottleneck twin), `encode`
            and `reference` (the PyTorch loop).

    Returns:
        The medians (`*_images_per_s`), `quantizer_overhead` (the extra time
        per image of the model over its twin), `encode_over_train` and the
        ratios to the reference of the model and of its twin.
    """
    train = statistics.median(windows["train"])
    identity = statistics.median(windows["identity"])
    encode = statistics.median(windows["encode"])
    reference = statistics.median(windows["reference"])
    return {
        "train_images_per_s": train,
        "identity_images_per_s": identity,
        # Extra time per image relative to the identity step.
        "quantizer_overhead": identity / train - 1.0,
        "encode_images_per_s": encode,
        "encode_over_train": encode / train,
        "reference_images_per_s": reference,
        "train_over_reference": train / reference,
        "identity_over_reference": identity / reference,
    }


def fit_ratios(timeline, references):
    """A whole `fit`'s rates (from `fit_timeline`) as ratios to the median of
    the reference windows around it."""
    reference = statistics.median(references)
    return {
        "reference_images_per_s": reference,
        "fit_over_reference": timeline["images_per_s"] / reference,
        "step_over_reference": timeline["step_images_per_s"] / reference,
    }


def failures(report):
    """The measurements that ended in an error."""
    results = [report["pipeline"]]
    results += [r for b in report["backends"].values() for r in b.values()]
    return [r["error"] for r in results if "error" in r]


def write_report(report, path):
    with open(path, "w") as file:
        json.dump(report, file, indent=2)


def machine_info(device):
    """The machine and its load when the run begins."""
    return {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(report):
    """The per-step table, the whole-fit table and the usage table."""
    lines = [
        "| backend | model | train img/s | reference img/s | train / reference "
        "| identity / reference | quantizer overhead | encode img/s | encode / train "
        "| pipeline / train | peak memory MB | host round-trips |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pipeline = report["pipeline"].get("images_per_s")
    fits = []
    for backend, results in report["backends"].items():
        for name, r in results.items():
            if name.startswith("usage_"):
                continue
            if "error" in r:
                lines.append(f"| {backend} | {name} | error: {r['error'][-80:]} |")
                continue
            if name.startswith("fit"):
                fits.append((backend, r))
                continue
            ratio = f"{pipeline / r['train_images_per_s']:.1f}x" if pipeline else "-"
            if name in LARGE or r.get("image_size", 32) != 32:
                name += f" ({r['image_size']} px, batch {r['batch_size']})"
            lines.append(
                f"| {backend} | {name} | {_rate(r['train_images_per_s'])} "
                f"| {_rate(r['reference_images_per_s'])} "
                f"| {r['train_over_reference']:.2f}x "
                f"| {r['identity_over_reference']:.2f}x "
                f"| {100 * r['quantizer_overhead']:+.1f}% "
                f"| {_rate(r['encode_images_per_s'])} "
                f"| {r['encode_over_train']:.1f}x | {ratio} "
                f"| {r['peak_memory_mb']:,.0f} | {r['host_round_trips']['per_step']} |"
            )
    if pipeline:
        settings = report.get("settings", {})
        data = settings.get("dataset") or "sample"
        size = settings.get("image_size") or 32
        lines.append(
            f"\ninput pipeline (`{data}` at {size} px, tf.data): "
            f"{pipeline:,.0f} images/s"
        )
    if fits:
        lines.append(
            "\nWhole `fit` of scripts/train.py's path (`sample` pipeline with "
            "augmentation, validation every epoch, its callbacks):\n\n"
            "| backend | policy | steps | fit img/s | step img/s | reference img/s "
            "| fit / reference | step / reference | fit over steps | slowest step s "
            "| val PSNR | codes used |\n" + "|---" * 12 + "|"
        )
        for backend, r in fits:
            lines.append(
                f"| {backend} | {r['policy']} | {r['train_steps']} "
                f"| {r['images_per_s']:,.0f} | {r['step_images_per_s']:,.0f} "
                f"| {r['reference_images_per_s']:,.0f} "
                f"| {r['fit_over_reference']:.2f}x | {r['step_over_reference']:.2f}x "
                f"| {100 * r['fit_over_steps']:+.1f}% "
                f"| {r['slowest_steps'][-1][1]:.2f} "
                f"| {r['validation']['psnr']:.2f} "
                f"| {r['validation']['cluster_use']:.0f} |"
            )
    usage = [
        (backend, name[len("usage_") :], r)
        for backend, results in report["backends"].items()
        for name, r in results.items()
        if name.startswith("usage_") and "error" not in r
    ]
    if usage:
        lines.append(
            "\n| backend | policy | steps | val recon_loss | perplexity | codes used |"
        )
        lines.append("|---|---|---|---|---|---|")
        for backend, policy, r in usage:
            lines.append(
                f"| {backend} | {policy} | {r['steps']} | {r['recon_loss']:.4f} "
                f"| {r['perplexity']:.1f} | {r['cluster_use']:.0f} |"
            )
    load = report["machine"]
    lines.append(
        f"\n{load['processor']}, {load['cpu_count']} cores, device {load['device']}; "
        f"load average before {_load(load['load_average_before'])}, "
        f"after {_load(load.get('load_average_after', []))}"
    )
    return "\n".join(lines)


def _rate(images_per_s):
    """Images/s to three significant digits, at least its integer part."""
    if images_per_s >= 100:
        return f"{images_per_s:,.0f}"
    return f"{images_per_s:.3g}"


def _load(values):
    return "/".join(f"{v:.2f}" for v in values)
