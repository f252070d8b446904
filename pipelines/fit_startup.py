"""How long ``fit`` takes to start: the optimiser built at compile (as ``compile_model`` does) against
built inside fit's first trace of the training step (Keras' default), each in a fresh process.

    python -m pipelines.fit_startup                                   # mobilenet_v3_small and resnet18, 2 repeats
    python -m pipelines.fit_startup --arch resnet50 --repeats 3

Each process builds the model (regression head), compiles it with the run's optimiser, optionally
calls ``model.optimizer.build(model.trainable_variables)``, counts the traces of ``train_step`` and
times one ``fit`` of two batches of 32 random 64x64 images. Built in the first trace, the optimiser's
slots are variables created while tracing, so TensorFlow traces the step a second time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deeplense_tf.cli import command_parser
from pipelines.children import child_result

ROOT = Path(__file__).resolve().parents[1]
MODES = ("in-trace", "prebuild")


def measure(arch: str, prebuild: bool) -> dict:
    """Runs in the child process."""
    import numpy as np

    from deeplense_tf.config import RunConfig, replace
    from deeplense_tf.models.build import create_model
    from deeplense_tf.training.trainer import make_optimizer

    config = replace(RunConfig(), model={"arch": arch, "task": "regression"})
    model = create_model(config.model, (64, 64, 1), n_classes=3, seed=0)
    model.compile(optimizer=make_optimizer(config.train, 2), loss="mse")
    if prebuild:
        model.optimizer.build(model.trainable_variables)
    traces = []
    step = model.train_step
    model.train_step = lambda data: (traces.append(1), step(data))[1]
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 64, 64, 1), "float32"), rng.random((64, 1), "float32")
    started = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return {"arch": arch, "mode": MODES[prebuild], "traces": len(traces), "fit_seconds": time.perf_counter() - started}


def run_child(arch: str, mode: str) -> dict:
    cmd = [sys.executable, "-m", "pipelines.fit_startup", "--child", json.dumps({"arch": arch, "prebuild": mode == "prebuild"})]
    return child_result(cmd, f"{arch} {mode}", cwd=ROOT)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.fit_startup", __doc__)
    p.add_argument("--arch", nargs="+", default=["mobilenet_v3_small", "resnet18"])
    p.add_argument("--repeats", type=int, default=2, help="processes per arch and mode, alternating (default %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        from deeplense_tf.cli import prepare_environment

        prepare_environment()
        print("RESULT " + json.dumps(measure(**json.loads(args.child))), flush=True)
        return 0
    print("| arch | optimiser built | traces | fit of 2 steps (s) |\n|---|---|---|---|")
    for arch in args.arch:
        rows = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                rows[mode].append(run_child(arch, mode))
        for mode, found in rows.items():
            seconds = ", ".join(f"{r['fit_seconds']:.1f}" for r in found)
            print(f"| {arch} | {'at compile' if mode == 'prebuild' else 'in the first trace'} | "
                  f"{found[0]['traces']} | {seconds} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
