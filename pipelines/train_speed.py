"""Training throughput of whole models (preprocessing + augmentation + backbone + head).

    python -m pipelines.train_speed --arch efficientnet_b0 --arch convnext_tiny
    python -m pipelines.train_speed --arch convnext_tiny --variant depthwise --variant grouped
    python -m pipelines.train_speed --arch resnet50 --onednn on --onednn off

Each (arch, variant, oneDNN) combination runs in its own process on resident synthetic
tensors (no input pipeline: ``pipelines.benchmark`` measures that), 3 warm-up steps, then
``--steps`` timed steps. ``grouped`` keeps Keras' ``Conv2D(groups=dim)`` instead of the
registry's depthwise rebuild. Prints images/s and the load average seen during the run:
compare numbers only within one invocation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys


def measure(arch: str, variant: str, size: int, batch: int, steps: int, task: str) -> dict:
    """Runs in the child process."""
    import time

    import numpy as np
    import tensorflow as tf

    from deeplense_tf.config import ModelConfig, RunConfig, replace
    from deeplense_tf.models import applications
    from deeplense_tf.models.build import create_model
    from deeplense_tf.trainer import compile_model

    if variant == "grouped":
        applications.grouped_to_depthwise = lambda model: model
    config = replace(RunConfig(), model={"arch": arch, "task": task})
    model = create_model(config.model, (size, size, 1), n_classes=3, seed=0)
    compile_model(model, config)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 4, size, size, 1)).astype("float32")
    y = rng.integers(0, 3, batch * 4) if task == "classification" else rng.normal(size=(batch * 4, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(tf.data.AUTOTUNE)
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"arch": arch, "variant": variant, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "images_per_s": round(steps * batch / seconds, 1), "step_s": round(seconds / steps, 4),
            "load": round(os.getloadavg()[0], 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", action="append", help="architecture (repeatable; default efficientnet_b0)")
    p.add_argument("--variant", action="append", choices=("depthwise", "grouped"),
                   help="depthwise (registry default) or grouped (Keras as shipped); repeatable")
    p.add_argument("--onednn", action="append", choices=("on", "off"), help="TF_ENABLE_ONEDNN_OPTS; repeatable")
    p.add_argument("--size", type=int, default=64, help="image side (1 channel)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps after 3 warm-up steps")
    p.add_argument("--task", default="classification", choices=("classification", "regression"))
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(**json.loads(args.child))))
        return 0
    rows = []
    for arch, variant, onednn in itertools.product(args.arch or ["efficientnet_b0"], args.variant or ["depthwise"],
                                                   args.onednn or ["on"]):
        job = {"arch": arch, "variant": variant, "size": args.size, "batch": args.batch, "steps": args.steps,
               "task": args.task}
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn == "on" else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = subprocess.run([sys.executable, "-m", "pipelines.train_speed", "--child", json.dumps(job)],
                             capture_output=True, text=True, env=env)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            print(f"{arch} {variant} oneDNN {onednn}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
            continue
        row = json.loads(lines[-1][7:])
        rows.append(row)
        print(f"{row['arch']:<22} {row['variant']:<10} oneDNN {onednn:<4} {row['images_per_s']:>8.1f} images/s "
              f"({row['step_s'] * 1000:.0f} ms/step, load {row['load']})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
