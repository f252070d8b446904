"""Record a TensorBoard profiler trace of a few training steps and say how long each step waited for input.

    python -m pipelines.profile --arch efficientnet_b0               # synthetic DeepLense-like shards
    python -m pipelines.profile --arch resnet50 --data runs/shards --reader shards
    tensorboard --logdir <the printed log dir>                       # then the "Profile" tab

The steps run under ``keras.callbacks.TensorBoard(profile_batch=...)``, which writes
``<logdir>/train/plugins/profile/<time>/<host>.xplane.pb``; each step is also wrapped in a
``tf.profiler.experimental.Trace("train", step_num=...)`` step marker. The summary is read back
from the trace with xprof (installed with tensorboard-plugin-profile): per step, the time the
train function spent in ``IteratorGetNext`` (waiting for the input pipeline) and its share of the
step; plus xprof's own input-pipeline analysis (which finds no step time on CPU-only runs, so
the share is computed from the trace events) and the input ops that cost the most.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from deeplense_tf.cli import command_parser, prepare_environment

WAIT_EVENT = "IteratorGetNextOp::DoCompute"


def with_step_markers(profiler) -> list:
    """Callbacks that bracket every training step with a profiler step marker, around ``profiler``.

    The marker opens after the profiler starts and closes before it stops, so the first and the
    last profiled steps are recorded whole.
    """
    import keras
    import tensorflow as tf

    open_traces = []

    class Open(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            open_traces.append(tf.profiler.experimental.Trace("train", step_num=batch, _r=1))
            open_traces[-1].__enter__()

    class Close(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            while open_traces:
                open_traces.pop().__exit__(None, None, None)

    return [Close(), profiler, Open()]


def synthetic_data(work: Path, reader: str, n: int, size: int):
    """The benchmark's synthetic files, as the chosen reader sees them: per_file, packed or shards."""
    from deeplense_tf.data.shards import write_shards
    from deeplense_tf.data.sources import load_data
    from pipelines.benchmark import make_files

    files = make_files(work / "files", n, size)
    if reader == "per_file":
        return load_data(str(files), validate="quick", stream=True)
    index = load_data(str(files))
    if reader == "packed":
        return index
    write_shards(index, work / "shards")
    return load_data(str(work / "shards"), stream=True, validate="quick")


def record(args) -> Path:
    """Train ``args.warmup + args.steps`` steps, profiling the last ``args.steps``; returns the .xplane.pb."""
    import keras

    from deeplense_tf.config import ModelConfig
    from deeplense_tf.data.pipeline import create_dataset
    from deeplense_tf.data.sources import load_data
    from deeplense_tf.models.build import create_model

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            index = load_data(args.data, validate="quick", stream=args.reader != "packed",
                              allow_pickle=args.allow_pickle)
        else:
            index = synthetic_data(Path(tmp), args.reader, args.samples, args.size)
        classes = sorted(set(index.table["class"])) if "class" in index.table else ["all"]
        labels = (np.searchsorted(classes, index.table["class"]) if "class" in index.table
                  else np.zeros(len(index.table))).astype(np.int32)
        keras.utils.set_random_seed(0)
        model = create_model(ModelConfig(arch=args.arch, task="classification"), tuple(index.images.shape[1:]),
                             n_classes=max(2, len(classes)), seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        ds = create_dataset(index.images, labels, args.batch_size, True, deterministic=False).repeat()
        profiler = keras.callbacks.TensorBoard(str(args.logdir), profile_batch=(args.warmup + 1, args.warmup + args.steps),
                                               write_graph=False, update_freq="epoch")
        print(f"training {args.warmup} warm-up + {args.steps} profiled steps of {args.arch} "
              f"({args.reader} reader, {len(labels)} images {tuple(index.images.shape[1:])})", flush=True)
        model.fit(ds, steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0,
                  callbacks=with_step_markers(profiler))
    traces = sorted(Path(args.logdir).glob("**/plugins/profile/*/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise SystemExit(f"no .xplane.pb under {args.logdir}: is tensorboard-plugin-profile installed?")
    return traces[-1]


def input_wait(xplane: Path) -> dict:
    """Per profiled step: step time and time spent waiting in ``IteratorGetNext`` (from the trace events)."""
    from xprof.convert import raw_to_tool_data

    data, _ = raw_to_tool_data.xspace_to_tool_data([str(xplane)], "trace_viewer", {})
    events = [e for e in json.loads(data)["traceEvents"] if e.get("ph") == "X"]
    steps = sorted((e for e in events if e.get("args", {}).get("step_name", "").startswith("train")),
                   key=lambda e: e["ts"])
    waits = [e for e in events if e["name"] == WAIT_EVENT]
    rows = []
    for step in steps:
        start, stop = step["ts"], step["ts"] + step["dur"]
        waited = sum(w["dur"] for w in waits if start <= w["ts"] < stop)
        rows.append({"step": int(step["args"]["step_num"]), "step_ms": step["dur"] / 1e3, "input_wait_ms": waited / 1e3})
    total = sum(r["step_ms"] for r in rows)
    return {"steps": rows, "step_ms_mean": total / max(len(rows), 1),
            "input_wait_share": sum(r["input_wait_ms"] for r in rows) / total if total else float("nan")}


def xprof_analysis(xplane: Path) -> dict:
    """xprof's input-pipeline analyser: its conclusion and the input ops with the most self time."""
    from xprof.convert import raw_to_tool_data

    data, _ = raw_to_tool_data.xspace_to_tool_data([str(xplane)], "input_pipeline_analyzer", {})
    tables = json.loads(data)
    summary = next((t["p"] for t in tables if "input_conclusion" in t.get("p", {})), {})
    ops_table = next((t for t in tables if any(c.get("id") == "opName" for c in t.get("cols", []))), None)
    ops = []
    if ops_table:
        ids = [c["id"] for c in ops_table["cols"]]
        for row in ops_table["rows"]:
            values = dict(zip(ids, (cell.get("v") for cell in row["c"])))
            ops.append({"op": values.get("opName"), "self_ms": values.get("selfTimeInMs"),
                        "category": values.get("category")})
        ops.sort(key=lambda o: -(o["self_ms"] or 0))
    return {"conclusion": summary.get("input_conclusion", ""), "next_step": summary.get("summary_nextstep", ""),
            "top_input_ops": ops[:8]}


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.profile", __doc__)
    p.add_argument("--arch", default="efficientnet_b0", help="backbone to train")
    p.add_argument("--data", help="data to read (any --data layout); default: synthetic 64x64 files")
    p.add_argument("--reader", choices=("shards", "per_file", "packed"), default="shards",
                   help="how the synthetic data is read; with --data: stream or load into memory")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled .npy files (runs code from the file)")
    p.add_argument("--samples", "--n", type=int, default=3000, help="synthetic images (--n: the older spelling)")
    p.add_argument("--size", type=int, default=64, help="synthetic image side")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--warmup", type=int, default=3, help="steps before profiling starts (tracing, warm-up)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--logdir", type=Path, help="TensorBoard log dir (default runs/profile-<arch>-<time>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.logdir = args.logdir or Path("runs") / f"profile-{args.arch}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    prepare_environment()
    xplane = record(args)
    summary = {"trace": str(xplane), **input_wait(xplane)}
    try:
        summary["xprof"] = xprof_analysis(xplane)
    except Exception as err:  # the analyser is a bonus; the trace and our own numbers stand without it
        summary["xprof"] = {"error": f"{type(err).__name__}: {err}"}
    (Path(args.logdir) / "input_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ntrace: {xplane}")
    print(f"{'step':>5} {'step ms':>9} {'waiting for input ms':>21} {'share':>7}")
    for row in summary["steps"]:
        print(f"{row['step']:>5} {row['step_ms']:>9.1f} {row['input_wait_ms']:>21.2f} "
              f"{row['input_wait_ms'] / row['step_ms']:>7.1%}")
    print(f"input-bound share of step time: {summary['input_wait_share']:.2%} "
          f"(mean step {summary['step_ms_mean']:.1f} ms)")
    x = summary["xprof"]
    if x.get("conclusion"):
        print(f"xprof input-pipeline analyser: {x['conclusion']}")
    for op in x.get("top_input_ops", [])[:5]:
        print(f"  input op {op['op']}: {op['self_ms']:.2f} ms self time ({op['category']})")
    print(f"summary: {Path(args.logdir) / 'input_summary.json'}")
    print(f"open it: tensorboard --logdir {args.logdir}   (Profile tab: trace_viewer, input_pipeline_analyzer, "
          "tf_data_bottleneck_analysis)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
