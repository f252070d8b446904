"""Where a training epoch's time goes: a real run's step inside ``fit`` against the bare step, and
what BatchNorm recalibration, validation and checkpointing add per epoch.

    python -m pipelines.fit_overhead                          # resnet18, released-data Model II regression
    python -m pipelines.fit_overhead --arch efficientnet_b0 --samples 1000 --epochs 3 --markdown
    python -m pipelines.fit_overhead --flags "--bn-recalibration 0"

Trains one ordinary run (``python -m deeplense_tf.train`` in a child process, into a temporary
folder) and reads the timings its ``history.csv`` holds for every epoch (``LogEpochPhases`` in
``training/callbacks.py``): the median step inside ``fit``, the training loop, the recalibration,
the validation pass and the checkpoint and logging between epochs. Right after, in its own
process, it times the bare step of the same model, batch and task on resident tensors
(``pipelines.train_speed``). The first epoch (tracing, the data's first pass) is left out of the
medians. Both load averages are printed: compare the two only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from deeplense_tf.cli import command_parser
from pipelines.train_speed import run_child

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("steps_seconds", "recalibration_seconds", "validation_seconds", "between_epochs_seconds")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.fit_overhead", __doc__)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--task", default="regression", choices=("regression", "classification"))
    p.add_argument("--data", default="sim:model_ii:noise=published", help="any --data of train (default %(default)s)")
    p.add_argument("--samples", type=int, default=3000, help="images per class (default %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the run; the first is left out (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default %(default)s)")
    p.add_argument("--flags", default="", help="further train flags, quoted as one string")
    p.add_argument("--bare-steps", type=int, default=20, help="timed bare steps (default %(default)s)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    return p


def fit_timings(args: argparse.Namespace, out: Path) -> dict:
    """Train the run and return the medians of its per-epoch timings (first epoch left out)."""
    cmd = [sys.executable, "-m", "deeplense_tf.train", "--arch", args.arch, "--task", args.task, "--data", args.data,
           "--samples", str(args.samples), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--out", str(out), *shlex.split(args.flags)]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"the training run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    (run,) = [p for p in out.iterdir() if (p / "history.csv").is_file()]
    history = pd.read_csv(run / "history.csv")
    steady = history.iloc[1:] if len(history) > 1 else history
    return {"run_seconds": time.perf_counter() - started, "load": os.getloadavg()[0], "epochs": len(history),
            "fit_step_ms": float(steady["step_ms"].median()), "epoch_seconds": float(steady["epoch_seconds"].median()),
            **{name: float(steady[name].median()) for name in PHASES},
            "train_images": int(pd.read_csv(run / "split.csv").query("split == 'train'").shape[0])}


def report(row: dict, markdown: bool) -> str:
    steps = row["steps_seconds"]
    lines = [("bare step (resident tensors)", f"{row['bare_step_ms']:.0f} ms", ""),
             ("step inside fit (median)", f"{row['fit_step_ms']:.0f} ms",
              f"{row['fit_step_ms'] / row['bare_step_ms']:.2f}x the bare step"),
             ("training loop per epoch", f"{steps:.1f} s", f"{row['steps_per_epoch']} steps"),
             ("BatchNorm recalibration per epoch", f"{row['recalibration_seconds']:.1f} s",
              f"{row['recalibration_seconds'] / steps:.0%} of the loop"),
             ("validation per epoch", f"{row['validation_seconds']:.1f} s", f"{row['validation_seconds'] / steps:.0%} of the loop"),
             ("checkpoint and logging between epochs", f"{row['between_epochs_seconds']:.1f} s",
              f"{row['between_epochs_seconds'] / steps:.0%} of the loop")]
    if markdown:
        return "\n".join(["| phase | time | |", "|---|---:|---|", *(f"| {a} | {b} | {c} |" for a, b, c in lines)])
    return "\n".join(f"{a:<40} {b:>9}  {c}" for a, b, c in lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fit_overhead_") as tmp:
        row = fit_timings(args, Path(tmp))
    bare = run_child({"arch": args.arch, "variant": "depthwise", "size": 64, "batch": args.batch_size,
                      "steps": args.bare_steps, "warmup": 2, "task": args.task, "jit": False}, "on", timeout=900)
    if bare.get("status") != "ok":
        raise SystemExit(f"the bare-step measurement failed: {bare.get('error')}")
    row.update(arch=args.arch, task=args.task, data=args.data, batch=args.batch_size, flags=args.flags,
               bare_step_ms=1000 * bare["train_step_s"], bare_load=bare["load"],
               steps_per_epoch=-(-row["train_images"] // args.batch_size))
    print(f"{args.arch} {args.task} on {args.data}, batch {args.batch_size}, {row['train_images']} training images, "
          f"{row['epochs']} epochs (medians of epochs 2..); load {row['load']:.1f} after the run, "
          f"{row['bare_load']:.1f} after the bare step")
    print(report(row, args.markdown))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
