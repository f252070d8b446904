"""The run directory and atomic writes.

Layout (DESIGN.md): ``runs/<arch>-<task>-<YYYYmmdd-HHMMSS>/`` with ``config.json``,
``data.json`` (class names, target scaling), ``split.csv``, ``history.csv``,
``checkpoints/{last,best}.keras`` + ``checkpoints/state.json``, ``logs/`` (TensorBoard),
``metrics.json``, ``predictions.csv``, ``plots/``, ``export/saved_model/``, ``model.keras``.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written checkpoint, config or export behind.

    python -m deeplense_tf.runs runs/ [--csv FILE]   # one line per run under a folder

lists every run (task, architecture, data, epochs, the headline test metric, training time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from deeplense_tf.errors import UserError
from deeplense_tf.version import __version__

CONFIG = "config.json"
DATA_INFO = "data.json"
STATE = "checkpoints/state.json"
LAST = "checkpoints/last.keras"
BEST = "checkpoints/best.keras"
SAVED_MODEL = "export/saved_model"
KERAS_MODEL = "model.keras"


def new_run_dir(out: str | Path, arch: str, task: str) -> Path:
    """Create a fresh run folder; never reuses an existing one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{arch.replace(':', '_').replace('+', '_')}-{task}-{stamp}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {base.parent}: {err}") from None
    for attempt in range(1000):
        path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "checkpoints").mkdir()
        return path
    raise UserError(f"could not create a new run folder under {base.parent}")


def run_bytes_needed(n_params: int) -> int:
    """Disk a run takes at most: last + best checkpoints with Adam's two moments (3 copies of the
    weights each), a temporary copy during each atomic write, model.keras and the SavedModel
    (one copy each), float32; plus 64 MiB of logs, plots and tables."""
    return (3 + 3 + 3 + 1 + 1) * 4 * int(n_params) + (64 << 20)


def check_room(out: str | Path, n_params: int) -> None:
    """Stop before training when ``out`` is not writable or cannot hold the run's files."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"the output folder {out} cannot be made: {probe} is a file; choose another with --out")
    if not os.access(probe, os.W_OK):
        raise UserError(f"the output folder {out} is not writable (checked {probe}); choose another with --out")
    free, need = shutil.disk_usage(probe).free, run_bytes_needed(n_params)
    if free < need:
        raise UserError(f"not enough disk space for the run in {out}: {free / 2**20:.0f} MiB free, about "
                        f"{need / 2**20:.0f} MiB needed for checkpoints and exports; free space or choose --out")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why a ``.keras`` checkpoint cannot be read (empty, truncated, damaged), or None when it is whole.

    A ``.keras`` file is a zip archive: a truncated one has lost its central directory, a damaged
    member fails its checksum. Checked here rather than by catching whatever ``load_model`` raises,
    so a whole checkpoint that fails to load for another reason is never set aside."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty, 0 bytes"
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        return f"not a complete .keras archive: {err}"
    return None if damaged is None else f"damaged member {damaged}"


def set_aside(path: str | Path) -> Path:
    """Rename an unreadable file to ``<name>.corrupt``: kept for a look, never loaded again."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt")
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another worker of a multi-worker run set it aside first
        pass
    return target


def require_run_dir(path: str | Path) -> Path:
    """A folder written by ``train``, or a clear error saying what is missing."""
    run = Path(path)
    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist")
    if not (run / CONFIG).is_file():
        raise UserError(f"{run} is not a deeplense_tf run directory: it has no {CONFIG} "
                        "(pass a folder that `python -m deeplense_tf.train` created)")
    return run


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()
    try:
        yield tmp_path
        if tmp_path.is_dir() and target.is_dir():
            _replace_dir(tmp_path, target)
        else:
            os.replace(tmp_path, target)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete what a killed writer left behind: ``atomic_path`` temporaries and half-swapped ``.old`` folders.

    A SIGKILL cannot be caught, so a checkpoint write it interrupts leaves its temporary file; the
    real file beside it is untouched. Resuming sweeps them so they do not pile up."""
    stale = [p for p in Path(run_dir).rglob(".*") if ".tmp" in p.name or p.name.endswith(".old")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def _replace_dir(new: Path, target: Path) -> None:
    """Swap a finished directory in: the old one is kept until the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_keras_model(model, path: str | Path) -> None:
    """``model.save`` wants a ``.keras`` suffix, so the temporary file keeps it."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# The metric a task is judged by, and whether lower is better.
HEADLINE = {"regression": ("mae", "min"), "classification": ("roc_auc_macro_ovr", "max"),
            "lens_finding": ("auc", "max"), "anomaly": ("auc_vs_all", "max")}


def find_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (any depth; ``root`` itself if it is one), sorted by path."""
    root = Path(root)
    if (root / CONFIG).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(CONFIG) if (p.parent / "checkpoints").is_dir())


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What one run was and what it reached, read from its files (no TensorFlow)."""
    import pandas as pd

    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG)
    task = config["model"]["task"]
    data = config["data"]["data"]
    state = read_json(run_dir / STATE) if (run_dir / STATE).is_file() else {}
    metric, _ = HEADLINE[task]
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    history_csv = run_dir / "history.csv"  # empty for a run stopped in its first epoch
    history = pd.read_csv(history_csv) if history_csv.is_file() and history_csv.stat().st_size else pd.DataFrame()
    seconds = float(history["epoch_seconds"].sum()) if "epoch_seconds" in history else None
    done = int(state.get("epochs_done", 0))
    status = "finished" if metrics else ("interrupted" if done else "not started")
    return {"run": str(run_dir), "task": task, "arch": config["model"]["arch"],
            "data": data if isinstance(data, str) else ",".join(data), "samples": config["data"]["samples"],
            "seed": config["train"]["seed"], "epochs": f"{done}/{config['train']['epochs']}", "status": status,
            "metric": metric, "value": metrics.get("metrics", {}).get(metric),
            "ci95": (metrics.get("metrics", {}).get("ci95") or {}).get(metric),
            "n_test": metrics.get("n"), "train_seconds": seconds,
            # fit's logged validation disagreed with the saved weights (training/revalidate.py)
            "val_disagreed": bool((metrics.get("revalidation") or {}).get("disagreement", False))}


def run_table(root: str | Path):
    """``run_summary`` of every run under ``root`` as a DataFrame."""
    import pandas as pd

    return pd.DataFrame([run_summary(r) for r in find_runs(root)])


def build_parser() -> argparse.ArgumentParser:
    """runs sits below cli (setup.cfg, layers), so not ``cli.command_parser``: its two flags state their
    defaults themselves, and the usage line names the console script as there."""
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "deeplense-runs" else "python -m deeplense_tf.runs",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("root", nargs="?", default="runs", type=Path, help="folder holding run folders (default runs)")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.root.exists():
        print(f"error: {args.root}: no such folder", file=sys.stderr)
        return 2
    table = run_table(args.root)
    if table.empty:
        print(f"no runs under {args.root}")
        return 0
    shown = table.drop(columns=["samples"]).copy()
    shown["value"] = shown["value"].map(lambda v: "" if v is None or v != v else f"{v:.4f}")
    shown["train_seconds"] = shown["train_seconds"].map(lambda v: "" if v is None or v != v else f"{v:.0f}")
    print(shown.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
