"""One process per measurement: the parent's `launch` and the worker's `main`.

The backend is fixed when Keras is imported, so every (backend, measurement)
pair runs in a fresh worker process:

    KERAS_BACKEND=jax python -m benchmarks.run deepmind --result r.json [--quick]

The worker writes its measurement as JSON to `--result`; `launch` reads it
back, or returns `{"error": ...}` with the tail of the worker's stderr.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.config import positive_int
from benchmarks.config import settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a worker measures besides a model name of `MODELS` or `LARGE`.
TASKS = ("pipeline", "usage", "fit")


def launch(args, backend, task, policy="float32"):
    """Runs one measurement in a fresh process and returns its JSON.

    Args:
        args: the runner's flags (`device`, `quick`, `batch_size`, `rounds`,
            `image_size`, `dataset`).
        backend: the Keras backend of the worker.
        task: a model name, or one of `TASKS`.
        policy: the worker's Keras dtype policy.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    # The worker imports `benchmarks` from this checkout, wherever it starts.
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    if args.device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="-1", JAX_PLATFORMS="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "benchmarks.run", task]
        command += ["--policy", policy, "--result", result, "--device", args.device]
        if args.quick:
            command.append("--quick")
        if args.batch_size:
            command += ["--batch_size", str(args.batch_size)]
        if args.rounds:
            command += ["--rounds", str(args.rounds)]
        if args.image_size:
            command += ["--image_size", str(args.image_size)]
        if args.dataset:
            command += ["--dataset", args.dataset]
        label = f"{backend} {task}" + ("" if policy == "float32" else f" {policy}")
        print(f"... {label}", file=sys.stderr, flush=True)
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode:
            tail = "\n".join(completed.stderr.splitlines()[-15:])
            return {"error": f"exit {completed.returncode}: {tail}"}
        with open(result) as file:
            return json.load(file)


def parse_worker_args(argv=None):
    parser = argparse.ArgumentParser(description="One benchmark measurement.")
    add = parser.add_argument
    add("task", help="a model name, or pipeline, usage, fit")
    add("--result", required=True, help="where the JSON result goes")
    add("--policy", default="float32")
    add("--device", choices=["cpu", "gpu"], default="cpu")
    add("--quick", action="store_true")
    add("--batch_size", type=positive_int)
    add("--rounds", type=positive_int)
    add("--image_size", type=positive_int)
    add("--dataset", default=None, help="the pipeline's (default: sample)")
    return parser.parse_args(argv)


def main(argv=None):
    """The worker: one measurement under `KERAS_BACKEND`, written as JSON."""
    args = parse_worker_args(argv)
    config = settings(args.quick, args.batch_size, args.rounds, args.image_size)
    config["dataset"] = args.dataset
    import keras

    from benchmarks import probes

    if args.device == "gpu" and args.task != "pipeline":
        probes.check_gpu(keras.backend.backend())
    keras.utils.set_random_seed(0)
    if args.policy != "float32":
        keras.mixed_precision.set_dtype_policy(args.policy)
    result = measure(args.task, config, args.policy, args.device)
    import keras_dvq

    result.update(
        backend=keras.backend.backend(),
        policy=args.policy,
        # The machine is shared: what else ran beside this measurement.
        load_average=os.getloadavg(),
        keras_dvq=os.path.dirname(keras_dvq.__file__),
    )
    with open(args.result, "w") as file:
        json.dump(result, file, indent=2)
    return 0


def measure(task, config, policy, device):
    """Imports only the module of `task`: each pulls in a different stack."""
    if task == "pipeline":
        from benchmarks.data import measure_pipeline

        return measure_pipeline(config)
    if task == "usage":
        from benchmarks.usage import measure_usage

        return measure_usage(config)
    if task == "fit":
        from benchmarks.whole_fit import measure_whole_fit

        return measure_whole_fit(config, policy)
    from benchmarks.throughput import measure_model

    return measure_model(task, config, device)


if __name__ == "__main__":
    sys.exit(main())
