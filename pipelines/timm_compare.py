"""Training speed of our backbones next to timm's (PyTorch) on the same input, one pair per family.

    python -m pipelines.timm_compare                                   # every pair, a Markdown table
    python -m pipelines.timm_compare --pair convnext_tiny --pair resnet50 --repeats 2
    python -m pipelines.timm_compare --torch-python /path/to/venv/bin/python --steps 6

PyTorch is not a dependency of the package: timm runs in a Python of its own (``--torch-python``,
default ``$TORCH_PYTHON`` or ``.torchvenv/bin/python`` in the project folder), made once with

    python3 -m venv .torchvenv
    .torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    .torchvenv/bin/pip install timm numpy

Ours: ``pipelines.train_speed`` (its own process; the whole model: standardisation, flips and
rot90, backbone, softmax head; oneDNN on). timm: ``timm.create_model(name, in_chans=1,
num_classes=0)``, its ``forward_features`` pooled as ours is (spatial mean, or the class token of
a ViT) and a 3-class ``Linear``, cross-entropy, Adam, ``torch.set_num_threads(cores)``, on the
input size our backbone sees (``input_plan``: 64, or 75 for Inception, 71 for Xception). Both
time ``--steps`` steps after ``--warmup`` steps on resident random tensors, batch 32. The two
alternate within each pair (and which goes first alternates from pair to pair and repeat to
repeat) so a change of load on the shared machine hits both; the table gives the best (or
``--stat median``) of ``--repeats`` runs and the load average seen. ratio = ours / timm: above 1
we train faster. Numbers mean little under load: with other processes on the cores, PyTorch's
OpenMP threads spin and lose far more than TensorFlow's pool (timm's ResNet-18 took 2-4 s a step
with 2 threads against 0.6-1.2 s with 1 at load 4), so read the load column, repeat, and compare
only rows measured on a quiet machine, or compare the kernels one thread each (``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deeplense_tf.cli import command_parser

TORCH_VENV = Path(__file__).resolve().parents[1] / ".torchvenv"  # beside the project, git-ignored
DEFAULT_TORCH_PYTHON = os.environ.get("TORCH_PYTHON", str(TORCH_VENV / "bin" / "python"))
INSTALL_HINT = (
    f"python3 -m venv {TORCH_VENV} && "
    f"{TORCH_VENV}/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu && "
    f"{TORCH_VENV}/bin/pip install timm numpy"
)


def torch_child_env() -> dict:
    """The environment of a child in the torch Python: it imports this project from its folder (the
    torch environment has no deeplense_tf installed)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}


@dataclass(frozen=True)
class Pair:
    arch: str  # our registry name
    timm: str  # timm model name
    timm_kwargs: dict = field(default_factory=dict)  # extra create_model arguments
    note: str = ""


# One pair per family; the closest timm model where the two differ.
PAIRS = (
    Pair("convnext_tiny", "convnext_tiny"),
    Pair("convnext_atto", "convnext_atto", note="timm's atto uses 1x1 convolutions (conv_mlp) for the MLP"),
    Pair("resnet50", "resnet50", note="Keras: stride on the first 1x1 (v1), conv biases; timm: v1.5"),
    Pair("efficientnet_b0", "efficientnet_b0"),
    Pair("resnet18", "resnet18"),
    Pair("resnext50", "resnext50_32x4d"),
    Pair("densenet121", "densenet121"),
    Pair("mobilenet_v3_large", "mobilenetv3_large_100"),
    Pair("efficientnet_v2_b0", "tf_efficientnetv2_b0"),
    Pair("vgg16", "vgg16", note="timm's ConvMlp pre-logits (fc6/fc7) not used: features pooled as ours"),
    Pair("inception_v3", "inception_v3"),
    Pair("xception", "legacy_xception", note="legacy_xception is the original (Keras) Xception; "
                                             "xception41 is the aligned DeepLab variant"),
    Pair("vit", "vit_tiny_patch16_224", {"img_size": 64, "patch_size": 8},
         note="ViT-Tiny re-sized to 64 px with 8x8 patches, as ours"),
)


# ---- the timm side: runs in the torch Python, which has no deeplense_tf and no TensorFlow ----

def measure_timm(model: str, size: int, batch: int, steps: int, warmup: int, kwargs: dict | None = None,
                 threads: int | None = None) -> dict:
    import numpy as np
    import timm
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    backbone = timm.create_model(model, pretrained=False, in_chans=1, num_classes=0, **(kwargs or {}))

    def pooled(x):
        f = backbone.forward_features(x)
        return f.mean((2, 3)) if f.ndim == 4 else f[:, 0]  # CNN: spatial mean; ViT: class token

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(batch, 1, size, size)).astype("float32"))
    y = torch.from_numpy(rng.integers(0, 3, batch))
    with torch.no_grad():
        width = pooled(x[:2]).shape[-1]
    head = torch.nn.Linear(width, 3)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, 1e-3)
    backbone.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(pooled(x)), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    used = sum(p.numel() for p in backbone.parameters() if p.grad is not None)  # not an unused head (VGG, MobileNetV3)
    return {"timm": model, "torch": torch.__version__, "timm_version": timm.__version__,
            "backbone_params": used, "size": size, "batch": batch,
            "threads": torch.get_num_threads(), "train_images_per_s": round(steps * batch / seconds, 2),
            "train_step_s": round(seconds / steps, 4), "build_s": round(start - t0, 1),
            "load": round(os.getloadavg()[0], 1)}


# ---- the parent: runs in the project's Python ------------------------------------------------

def check_torch_python(path: str) -> str:
    """The torch Python's versions ("torch X, timm Y"); SystemExit saying how to install it otherwise."""
    if not Path(path).is_file():
        raise SystemExit(f"error: no PyTorch Python at {path} (--torch-python). timm runs in a virtual "
                         f"environment of its own, kept apart from the project's; make it with:\n  {INSTALL_HINT}")
    probe = "import torch, timm; print(f'torch {torch.__version__}, timm {timm.__version__}')"
    out = subprocess.run([path, "-c", probe], capture_output=True, text=True, timeout=300)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {path} cannot import torch and timm ({last}). Install them with:\n  {INSTALL_HINT}")
    return out.stdout.strip()


def run_timm(torch_python: str, pair: Pair, size: int, batch: int, steps: int, warmup: int, timeout: float,
             threads: int | None = None) -> dict:
    """One timm measurement in the torch Python; never raises (failures become the row's ``status``)."""
    job = {"model": pair.timm, "size": size, "batch": batch, "steps": steps, "warmup": warmup,
           "kwargs": pair.timm_kwargs, "threads": threads}
    cmd = [torch_python, str(Path(__file__).resolve()), "--torch-child", json.dumps(job)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=torch_child_env())
    except subprocess.TimeoutExpired:
        return {"timm": pair.timm, "status": "timeout", "timeout_s": timeout}
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        error = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {"timm": pair.timm, "status": "error", "error": error[:300]}
    return {**json.loads(lines[-1][7:]), "status": "ok"}


def run_ours(pair: Pair, size: int, batch: int, steps: int, warmup: int, timeout: float) -> dict:
    from pipelines import train_speed

    job = {"arch": pair.arch, "variant": "depthwise", "size": size, "batch": batch, "steps": steps,
           "warmup": warmup, "task": "classification", "jit": False}
    return train_speed.run_child(job, "on", timeout)


STATS = {"best": max, "median": statistics.median}


def rate(runs: list[dict], stat: str = "best") -> float | None:
    """Training images/s over the runs that finished (their best or median); None if none did."""
    values = [r["train_images_per_s"] for r in runs if r.get("status") == "ok" and r.get("train_images_per_s")]
    return STATS[stat](values) if values else None


def summarise(pair: Pair, ours: list[dict], timm: list[dict], params: int | None, stat: str = "best") -> dict:
    mine, theirs = rate(ours, stat), rate(timm, stat)
    ok_timm = [r for r in timm if r.get("status") == "ok"]
    return {"arch": pair.arch, "timm": pair.timm, "note": pair.note, "ours": mine, "timm_rate": theirs,
            "ratio": mine / theirs if mine and theirs else None, "ours_params": params, "stat": stat,
            "runs": len(ours), "ours_runs": [r.get("train_images_per_s") for r in ours],
            "timm_runs": [r.get("train_images_per_s") for r in timm],
            "timm_params": ok_timm[0].get("backbone_params") if ok_timm else None,
            "loads": [r["load"] for r in ours + timm if r.get("load") is not None],
            "failures": [f"{side} {r.get('status')}: {r.get('error', r.get('timeout_s', ''))}"
                         for side, runs in (("ours", ours), ("timm", timm)) for r in runs if r.get("status") != "ok"]}


def _number(value: float | None) -> str:
    return "failed" if value is None else f"{value:.1f}"


def markdown(rows: list[dict], flag_below: float = 0.9) -> str:
    from deeplense_tf.models.param_counts import format_count

    def count(n):
        return format_count(n) if n else "?"

    runs = max((r["runs"] for r in rows), default=1)
    stat = "" if runs == 1 else f" ({rows[0]['stat']} of {runs})"
    lines = [f"| arch | timm model | params ours / timm | ours img/s{stat} | timm img/s{stat} | ratio | load |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}" + (" **slower**" if r["ratio"] < flag_below else "")
        load = f"{min(r['loads']):.1f}-{max(r['loads']):.1f}" if r["loads"] else ""
        lines.append(f"| {r['arch']} | {r['timm']} | {count(r['ours_params'])} / {count(r['timm_params'])} | "
                     f"{_number(r['ours'])} | {_number(r['timm_rate'])} | {ratio} | {load} |")
    notes = [f"- {r['arch']} / {r['timm']}: {r['note']}" for r in rows if r["note"]]
    notes += [f"- {r['arch']} / {r['timm']}: {failure}" for r in rows for failure in r["failures"]]
    slower = [r["arch"] for r in rows if r["ratio"] is not None and r["ratio"] < flag_below]
    notes.append(f"- ratio below {flag_below}: {', '.join(slower)}" if slower else
                 f"- every measured pair at ratio {flag_below} or above")
    return "\n".join(lines + [""] + notes)


def select_pairs(names: list[str] | None) -> list[Pair]:
    if not names:
        return list(PAIRS)
    by_name = {p.arch: p for p in PAIRS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"error: no timm pair for {', '.join(unknown)}; pairs: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def compare(pair: Pair, args, first_ours: bool) -> dict:
    """``args.repeats`` runs of each side, alternating, the side that starts alternating too."""
    from deeplense_tf.models.param_counts import load_table
    from deeplense_tf.models.registry import input_plan

    timm_size = input_plan(pair.arch, (args.size, args.size, 1)).shape[0]
    ours, timm = [], []
    for repeat in range(args.repeats):
        sides = ["ours", "timm"] if first_ours ^ bool(repeat % 2) else ["timm", "ours"]
        for side in sides:
            if side == "ours":
                row = run_ours(pair, args.size, args.batch_size, args.steps, args.warmup, args.timeout)
                ours.append(row)
            else:
                row = run_timm(args.torch_python, pair, timm_size, args.batch_size, args.steps, args.warmup, args.timeout,
                               args.threads)
                timm.append(row)
            shown = f"{row['train_images_per_s']:8.1f} images/s" if row.get("status") == "ok" else row.get("status")
            print(f"  {pair.arch:<20} {side:<5} {shown}  load {row.get('load', '?')}", flush=True)
    return summarise(pair, ours, timm, load_table().get(pair.arch), args.stat)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.timm_compare", __doc__)
    p.add_argument("--pair", action="append", help="our arch of a pair (repeatable; default every pair)")
    p.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="a Python with torch and timm")
    p.add_argument("--threads", type=int, help="threads of both frameworks (torch.set_num_threads; TensorFlow's "
                   "TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS); default every core. 1 compares the kernels "
                   "on a loaded machine, where OpenMP's spinning threads lose more than TensorFlow's pool")
    p.add_argument("--size", type=int, default=64, help="image side (1 channel); Inception/Xception see their minimum")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing, allocator warm-up)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side per pair; the table shows the median")
    p.add_argument("--stat", choices=tuple(STATS), default="best",
                   help="how the repeats combine: best (default: on a shared machine the least disturbed run is the "
                        "closest to the hardware) or median")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per process")
    p.add_argument("--flag-below", type=float, default=0.9, help="mark ratios below this as slower")
    p.add_argument("--json", help="also write the rows to this JSON file (rewritten after each pair)")
    p.add_argument("--torch-child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.torch_child:
        job = json.loads(args.torch_child)
        print("RESULT " + json.dumps(measure_timm(**job)), flush=True)
        return 0
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("error: --warmup, --steps and --repeats must be at least 1")
    pairs = select_pairs(args.pair)
    versions = check_torch_python(args.torch_python)  # before minutes of Keras children
    from deeplense_tf.cli import prepare_environment

    prepare_environment()  # this process imports TensorFlow too (input_plan): quietly
    if args.threads:  # train_speed's children inherit the environment
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    print(f"timm side: {versions} ({args.torch_python}); {os.cpu_count()} cores, "
          f"{args.threads or 'all'} used; "
          f"load {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    rows = []
    for i, pair in enumerate(pairs):
        rows.append(compare(pair, args, first_ours=i % 2 == 0))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(markdown(rows, args.flag_below))
    return 0 if any(r["ratio"] is not None for r in rows) else 1


if __name__ == "__main__":
    # Run by path (the torch child), Python puts pipelines/ first on sys.path, where our
    # profile.py would shadow the standard library's (which torch imports).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
