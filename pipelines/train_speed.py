"""Training and inference throughput of whole models (preprocessing + augmentation + backbone + head).

    python -m pipelines.train_speed --arch efficientnet_b0 --arch convnext_tiny
    python -m pipelines.train_speed --arch convnext_tiny --variant depthwise --variant grouped
    python -m pipelines.train_speed --arch resnet50 --onednn on --onednn off
    python -m pipelines.train_speed --all --jit off --markdown --timeout 180
    python -m pipelines.train_speed --pattern 'resnet*' --jit off --jit on --markdown

Each (arch, variant, oneDNN, jit) combination runs in its own process on resident synthetic
tensors (no input pipeline: ``pipelines.benchmark`` measures that). Training: one ``fit`` of
``--warmup`` + ``--steps`` steps, timed from the end of the last warm-up step to the end of
the last step (so tracing, XLA compilation and ``fit``'s own start-up are not counted).
Inference: ``predict_on_batch`` on one resident batch (``training=False``, the model's
compiled predict function, so ``--jit on`` applies to it too), ``--warmup`` calls, then at
least ``--steps`` calls and at least one second. ``--timeout`` bounds each process: a row
that runs out records "timeout" (keeping the training rate when only inference was
missing), a failing row records its error; neither stops the table. ``--all`` and
``--pattern`` run the smallest backbones first, and ``--max-minutes`` stops starting new
processes (the rest are listed as not run), as does SIGINT / SIGTERM. The parameter count is
the backbone's at 64x64x1 from ``deeplense_tf/models/param_counts.json`` (the heads add
<1%); the child's whole-model count is in ``--json``. The load average seen during the
run is printed with each row: compare numbers only within one invocation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import math
import signal
import tempfile
import time
from pathlib import Path

from deeplense_tf.cli import command_parser


def measure(arch: str, variant: str, size: int, batch: int, steps: int, task: str, jit: bool = False,
            warmup: int = 2, partial: str | None = None) -> dict:
    """Runs in the child process; with ``partial``, the row so far is written there after each phase."""
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from deeplense_tf.config import RunConfig, replace
    from deeplense_tf.models import applications
    from deeplense_tf.models.build import create_model
    from deeplense_tf.training.trainer import compile_model

    def save(row):
        if partial:
            Path(partial).write_text(json.dumps(row))
        return row

    t0 = time.perf_counter()
    if variant == "grouped":
        applications.grouped_to_depthwise = lambda model: model
    config = replace(RunConfig(), model={"arch": arch, "task": task}, train={"jit_compile": jit})
    model = create_model(config.model, (size, size, 1), n_classes=3, seed=0)
    compile_model(model, config)
    row = save({"arch": arch, "variant": variant, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "jit": bool(jit), "jit_effective": bool(model.jit_compile), "model_params": int(model.count_params()),
                "size": size, "batch": batch, "build_s": round(time.perf_counter() - t0, 1)})

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 4, size, size, 1)).astype("float32")
    y = rng.integers(0, 3, batch * 4) if task == "classification" else rng.normal(size=(batch * 4, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(tf.data.AUTOTUNE)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    times = StepTimes()
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[times])
    seconds = times.ends[-1] - times.ends[warmup - 1]
    row = save({**row, "train_images_per_s": round(steps * batch / seconds, 2), "train_step_s": round(seconds / steps, 4),
                "first_step_s": round(times.ends[0] - start, 1), "load": round(os.getloadavg()[0], 1)})

    batch_x = tf.constant(x[:batch])
    start = time.perf_counter()
    for _ in range(warmup):
        model.predict_on_batch(batch_x)
    row["first_predict_s"] = round(time.perf_counter() - start, 1)
    calls, start = 0, time.perf_counter()
    while calls < steps or time.perf_counter() - start < 1.0:
        model.predict_on_batch(batch_x)
        calls += 1
    seconds = time.perf_counter() - start
    return save({**row, "infer_images_per_s": round(calls * batch / seconds, 2), "infer_step_s": round(seconds / calls, 4),
                 "load": round(os.getloadavg()[0], 1)})


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_child(job: dict, onednn: str, timeout: float) -> dict:
    """One measurement in its own process; never raises: failures and timeouts become the row's ``status``."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn == "on" else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        partial = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "pipelines.train_speed", "--child", json.dumps({**job, "partial": str(partial)})]
        base = {"arch": job["arch"], "variant": job["variant"], "onednn": onednn, "jit": job["jit"]}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                 cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:  # run() has killed the child
            row = json.loads(partial.read_text()) if partial.is_file() else {}
            return {**base, **row, "onednn": onednn, "status": "timeout", "timeout_s": timeout}
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            row = json.loads(partial.read_text()) if partial.is_file() else {}
            errors = [json.loads(line[6:]) for line in out.stdout.splitlines() if line.startswith("ERROR ")]
            if errors:
                message = errors[-1]
            elif out.returncode < 0:
                message = f"killed by signal {-out.returncode} (out of memory?)"
            else:
                message = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
            return {**base, **row, "onednn": onednn, "status": "error", "error": message.strip()[:300],
                    "stderr_tail": out.stderr[-1500:]}
    return {**json.loads(lines[-1][7:]), "onednn": onednn, "status": "ok"}


def combo_label(row: dict, varying: set[str]) -> str:
    parts = [f"jit {'on' if row['jit'] else 'off'}"]
    if "variant" in varying:
        parts.append(row["variant"])
    if "onednn" in varying:
        parts.append(f"oneDNN {row['onednn']}")
    return ", ".join(parts)


def cell(row: dict | None, key: str) -> str:
    if row is None:
        return ""
    if row.get(key) is not None:
        value = f"{row[key]:.1f}"
        if row["jit"] and not row.get("jit_effective", True):
            value += " (XLA refused)"
        return value
    if row["status"] == "timeout":
        return f"timeout ({row['timeout_s']:.0f} s)"
    if row["status"] == "error":
        return "error"
    return row["status"]


def markdown(rows: list[dict], params: dict[str, int | None]) -> str:
    """One line per arch: backbone parameters, then training and inference images/s per combination."""
    from deeplense_tf.models.param_counts import format_count

    varying = {key for key in ("variant", "onednn") if len({r[key] for r in rows}) > 1}
    combos = list(dict.fromkeys(combo_label(r, varying) for r in rows))
    header = ["arch", "params"]
    for combo in combos:
        header += [f"train img/s ({combo})", f"inference img/s ({combo})"]
    header.append("load")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = {combo_label(r, varying): r for r in rows if r["arch"] == arch}
        n = params.get(arch)
        cells = [arch, format_count(n) if n else "?"]
        for combo in combos:
            cells += [cell(mine.get(combo), "train_images_per_s"), cell(mine.get(combo), "infer_images_per_s")]
        cells.append(" / ".join(str(r["load"]) for r in mine.values() if r.get("load") is not None))
        lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in rows if r["status"] == "error"]
    skipped = [r for r in rows if r["status"] == "not run"]
    if skipped:
        lines += ["", f"Not run ({skipped[0]['error']}): {', '.join(dict.fromkeys(r['arch'] for r in skipped))}."]
    if errors:
        lines.append("")
    for r in errors:
        lines.append(f"- {r['arch']} ({combo_label(r, varying)}) failed: {r['error'].replace('`', chr(39))}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.train_speed", __doc__)
    p.add_argument("--arch", action="append", help="architecture (repeatable; default efficientnet_b0)")
    p.add_argument("--all", action="store_true", help="every architecture of list_archs()")
    p.add_argument("--pattern", action="append", help="glob over list_archs(), e.g. 'resnet*' (repeatable)")
    p.add_argument("--variant", action="append", choices=("depthwise", "grouped"),
                   help="depthwise (registry default) or grouped (Keras as shipped); repeatable")
    p.add_argument("--onednn", action="append", choices=("on", "off"), help="TF_ENABLE_ONEDNN_OPTS; repeatable")
    p.add_argument("--jit", action="append", choices=("on", "off"), help="compile with jit_compile (XLA); repeatable")
    p.add_argument("--size", type=int, default=64, help="image side (1 channel)")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing, XLA compilation) before timing")
    p.add_argument("--steps", type=int, default=5, help="timed training steps after the warm-up steps")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per process (build, warm-up, timing)")
    p.add_argument("--max-minutes", type=float, help="start no process after this many minutes (rows: 'not run')")
    p.add_argument("--task", default="classification", choices=("classification", "regression"))
    p.add_argument("--markdown", action="store_true", help="print the rows as a Markdown table at the end")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def select_archs(args) -> list[str]:
    from deeplense_tf.models.registry import get_arch, list_archs

    names = list(args.arch or ([] if args.all or args.pattern else ["efficientnet_b0"]))
    for name in names:
        get_arch(name)  # a typo fails here, not after minutes of children
    if not (args.all or args.pattern):
        return names
    for pattern in ["*"] if args.all else args.pattern:
        matched = list_archs(pattern)
        if not matched:
            raise SystemExit(f"--pattern {pattern!r} matches no architecture")
        names += matched
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        try:
            row = measure(**json.loads(args.child))
        except Exception as e:  # the parent records it in the row and goes on
            print("ERROR " + json.dumps(f"{type(e).__name__}: {e}"), flush=True)
            raise
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    from deeplense_tf.errors import ConfigError
    from deeplense_tf.models.param_counts import load_table

    try:
        archs = select_archs(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = load_table()
    params = {arch: table.get(arch) for arch in archs}
    if args.all or args.pattern:  # smallest first: a run stopped by --max-minutes keeps the most rows
        archs.sort(key=lambda arch: (params[arch] is None, params[arch] or 0))
    signal.signal(signal.SIGTERM, _interrupt)  # subprocess.run kills the running child on the exception
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else math.inf
    rows = []
    for arch, variant, onednn, jit in itertools.product(archs, args.variant or ["depthwise"], args.onednn or ["on"],
                                                        args.jit or ["off"]):
        job = {"arch": arch, "variant": variant, "size": args.size, "batch": args.batch_size, "steps": args.steps,
               "warmup": args.warmup, "task": args.task, "jit": jit == "on"}
        base = {"arch": arch, "variant": variant, "onednn": onednn, "jit": jit == "on", "backbone_params": params[arch]}
        if time.monotonic() > deadline:
            rows.append({**base, "status": "not run", "error": f"--max-minutes {args.max_minutes} reached"})
            continue
        try:
            row = run_child(job, onednn, args.timeout)
        except KeyboardInterrupt:
            print("interrupted: the remaining rows are not run", file=sys.stderr)
            deadline = -math.inf
            rows.append({**base, "status": "not run", "error": "interrupted"})
            continue
        row["backbone_params"] = params[arch]
        rows.append(row)
        rates = "  ".join(f"{name} {row[key]:>8.1f} images/s" if row.get(key) is not None else f"{name} {row['status']:>8}"
                          for name, key in (("train", "train_images_per_s"), ("inference", "infer_images_per_s")))
        extra = f"load {row['load']}" if row.get("load") is not None else ""
        if row["status"] == "error":
            extra += f" error: {row['error']}"
        elif jit == "on" and row.get("jit_effective") is False:
            extra += " (model refused jit_compile)"
        print(f"{arch:<22} {variant:<10} oneDNN {onednn:<3} jit {jit:<3} {rates}  {extra}", flush=True)
        if args.json:  # rewritten after each row: a stopped run keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        print()
        print(markdown(rows, params))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
