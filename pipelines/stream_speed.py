"""Images/s of the simulated training stream (``--data sim-stream:<preset>``) against what training consumes.

    python -m pipelines.stream_speed --preset model_ii --workers 1 2 --seconds 20 --arch resnet18
    python -m pipelines.stream_speed --preset model_ii --workers 1 4 8 16 --raw --arch none

Measured one after the other on the same machine:

1. ``stream``: the tf.data stream alone (``StreamSource.dataset()``: simulator processes ->
   batches -> labels -> prefetch), images/s for ``--seconds`` after its first batch and the
   batches that could already be waiting (process start-up and lenstronomy's import are not
   counted; they are printed as ``startup_s``), for each ``--workers``. ``--raw`` measures the
   bare process pool (``deeplense_tf.sim.stream.stream``) instead, without TensorFlow;
2. ``train (resident)``: training images/s of ``--arch`` on resident tensors, no input pipeline
   (``pipelines.train_speed``, in its own process): what a training step consumes;
3. ``train (from stream)``: the same model fed by the stream, for each ``--workers``. On a
   machine without a GPU the simulator and the model share the cores, so this is the number
   that counts there (``--fit-steps 0`` skips it).

The stream is fast enough to train from directly when (1) is at least (2): then (3) reaches (2)
wherever the simulator has cores of its own (a GPU machine). ``--arch none`` skips (2) and (3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from deeplense_tf.cli import command_parser


def stream_plan(preset: str, task: str, batch: int, workers: int, seed: int = 0):
    """The ``StreamPlan`` a ``sim-stream:<preset>`` run of ``task`` would stream (no fixed set needed)."""
    from deeplense_tf.sim.generate import get_preset
    from deeplense_tf.data.stream import STREAM_SEED_OFFSET, StreamPlan

    p = get_preset(preset)
    classes = ("axion",) if task == "regression" else p.classes
    shape = (p.num_pix, p.num_pix, max(1, len(p.bands)))
    return StreamPlan(f"sim-stream:{preset}", p.name, seed + STREAM_SEED_OFFSET, classes, task, "log10_axion_mass",
                      tuple(sorted(p.classes)), None, shape, batch, 1, workers)


def _fit_labels(task: str):
    from deeplense_tf.training.trainer import fit_labels

    return lambda y: fit_labels(task, y)


def stream_rate(plan, seconds: float, block: int = 32) -> dict:
    """Images/s of ``StreamSource.dataset()`` once running."""
    from deeplense_tf.data.stream import StreamSource

    source = StreamSource(plan, plan.batch_size, _fit_labels(plan.task), block=block)
    try:
        batches = iter(source.dataset())
        started = time.perf_counter()
        next(batches)
        startup = time.perf_counter() - started
        for _ in range(math.ceil(2 * plan.workers * block / plan.batch_size)):  # what may already be waiting
            next(batches)
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            next(batches)
            n += plan.batch_size
        return {"images_per_s": round(n / (time.perf_counter() - started), 1), "startup_s": round(startup, 1)}
    finally:
        source.close()


def raw_rate(plan, seconds: float, block: int = 32) -> dict:
    """Images/s of the bare process pool (``deeplense_tf.sim.stream.stream``), no TensorFlow."""
    from deeplense_tf.sim.stream import stream

    items = stream(plan.preset, plan.seed, plan.workers, block=block, classes=plan.classes)
    try:
        started = time.perf_counter()
        next(items)
        startup = time.perf_counter() - started
        for _ in range(2 * plan.workers * block):
            next(items)
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            next(items)
            n += 1
        return {"images_per_s": round(n / (time.perf_counter() - started), 1), "startup_s": round(startup, 1)}
    finally:
        items.close()


def resident_rate(arch: str, plan, steps: int, timeout: float) -> dict:
    """``pipelines.train_speed`` on resident tensors of the preset's image size (its own process)."""
    from pipelines.train_speed import run_child

    job = {"arch": arch, "variant": "depthwise", "size": plan.image_shape[0], "batch": plan.batch_size,
           "steps": steps, "warmup": 2, "task": plan.task, "jit": False}
    return run_child(job, "on" if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") == "1" else "off", timeout)


def build_model(arch: str, plan):
    from deeplense_tf.config import RunConfig, replace
    from deeplense_tf.models.build import create_model
    from deeplense_tf.training.trainer import compile_model

    config = replace(RunConfig(), model={"arch": arch, "task": plan.task})
    model = create_model(config.model, plan.image_shape, n_classes=len(plan.class_names), seed=0)
    compile_model(model, config)
    return model


def fit_rate(model, plan, steps: int, warmup: int = 2) -> dict:
    """Training images/s of ``model.fit`` fed by the stream (timed from the end of the warm-up steps)."""
    import keras

    from deeplense_tf.data.stream import StreamSource

    ends = []
    times = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    source = StreamSource(plan, plan.batch_size, _fit_labels(plan.task))
    try:
        model.fit(source.dataset(), steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[times],
                  shuffle=False)
    finally:
        source.close()
    seconds = ends[-1] - ends[warmup - 1]
    return {"images_per_s": round(steps * plan.batch_size / seconds, 1), "step_s": round(seconds / steps, 3)}


def verdict(stream: float, train: float | None) -> str:
    if train is None:
        return ""
    ratio = stream / train
    return (f"keeps up ({ratio:.1f}x what training consumes)" if ratio >= 1 else
            f"too slow: {ratio:.2f}x of what training consumes, about {math.ceil(1 / ratio)}x the workers needed")


def markdown(rows: list[dict]) -> str:
    lines = ["| workers | stream img/s | startup s | train img/s (resident) | train img/s (from stream) | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['stream_images_per_s']} | {r['startup_s']} | "
                     f"{r.get('train_resident_images_per_s', '')} | {r.get('train_from_stream_images_per_s', '')} | "
                     f"{r.get('verdict', '')} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.stream_speed", __doc__)
    p.add_argument("--preset", default="model_ii", help="simulator preset")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="simulator process counts to measure")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds of each stream measurement")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch of the stream and of training")
    p.add_argument("--task", default="regression", choices=("regression", "classification", "lens_finding"),
                   help="regression streams the axion class only (default), the others every class")
    p.add_argument("--arch", default="resnet18", help="model whose training rate to compare with; none: skip")
    p.add_argument("--steps", type=int, default=10, help="timed training steps on resident tensors")
    p.add_argument("--fit-steps", type=int, default=20, help="timed training steps fed by the stream (0: skip)")
    p.add_argument("--raw", action="store_true", help="time the bare process pool (no TensorFlow) instead of tf.data")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the resident-tensor process")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table at the end")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if min(args.workers) < 1 or args.batch_size < 1 or args.seconds <= 0:
        raise SystemExit("--workers, --batch-size and --seconds must be positive")
    arch = None if args.arch == "none" else args.arch
    print(f"{args.preset}, task {args.task}, batch {args.batch_size}, {os.cpu_count()} cores, "
          f"load {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    rows = []
    for workers in args.workers:
        plan = stream_plan(args.preset, args.task, args.batch_size, workers)
        rate = (raw_rate if args.raw else stream_rate)(plan, args.seconds)
        rows.append({"preset": args.preset, "task": args.task, "batch": args.batch_size, "workers": workers,
                     "raw": args.raw, "stream_images_per_s": rate["images_per_s"], "startup_s": rate["startup_s"],
                     "load": round(os.getloadavg()[0], 1)})
        print(f"stream  workers {workers:>2}: {rate['images_per_s']:>8.1f} images/s "
              f"(startup {rate['startup_s']} s, load {rows[-1]['load']})", flush=True)
    if arch:
        resident = resident_rate(arch, plan, args.steps, args.timeout)
        train = resident.get("train_images_per_s")
        print(f"train   {arch} on resident tensors: {train} images/s ({resident['status']}, "
              f"load {resident.get('load')})", flush=True)
        model = build_model(arch, plan) if args.fit_steps > 0 else None
        for row in rows:
            row.update({"arch": arch, "train_resident_images_per_s": train,
                        "verdict": verdict(row["stream_images_per_s"], train)})
            if model is not None:
                fed = fit_rate(model, stream_plan(args.preset, args.task, args.batch_size, row["workers"]), args.fit_steps)
                row["train_from_stream_images_per_s"] = fed["images_per_s"]
                print(f"train   {arch} from the stream, workers {row['workers']:>2}: {fed['images_per_s']} images/s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
            print(f"workers {row['workers']:>2}: the stream {row['verdict']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        print()
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
