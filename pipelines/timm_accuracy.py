"""Accuracy of our training recipe next to a plain timm (PyTorch) loop on the same files, several seeds.

    python -m pipelines.timm_accuracy                                   # resnet18, 700 per class, 8 epochs, seeds 0 1
    python -m pipelines.timm_accuracy --seeds 0 1 2 --epochs 8 --markdown --json /tmp/acc.json
    python -m pipelines.timm_accuracy --sides ours --flags "--dropout 0"   # one change to our recipe

``pipelines.timm_compare`` times the bare training step; this one trains whole runs. The data:
released-data Model II (``sim:model_ii:noise=published``) from our simulator, ``--train-per-class``
images per class to train, ``--val-per-class`` more for our run's validation (model selection and
BatchNorm recalibration; the timm loop validates nothing, as the DeepLense sub-projects train),
``--test-per-class`` more as our own test set, and the DeepLenseSim reference images
(``--reference``, made by the original generator). Both sides train on the same training files
for ``--epochs`` at batch ``--batch-size`` and are scored on the same test images (macro one-vs-rest
ROC-AUC and accuracy, computed here from each side's probabilities).

- ours: ``python -m deeplense_tf.train --task classification --arch ARCH --data TRAIN --val-data VAL
  --test-data TEST --init-seed SEED`` (every default: Adam 1e-3, one warm-up epoch then cosine,
  flips and 90-degree turns, recalibration), scored with its ``best.keras`` (row "ours") and with its
  last epoch's weights (``last.keras``, "ours (last epoch)", as the timm loop is);
- timm: ``timm.create_model(ARCH, in_chans=1, num_classes=3)`` in the torch Python of
  ``timm_compare`` (``--torch-python``), per-image standardisation, random flips and 90-degree
  turns drawn for each image, Adam 1e-3, one linear warm-up epoch then cosine per step, cross-entropy, seeded by SEED;
  scored with its last weights.

The training time of each side is its own: ours the sum of its epochs (``epoch_seconds``, with
validation), timm's the wall time of its loop. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplense_tf.cli import command_parser
from pipelines.children import child_result
from pipelines.timm_compare import DEFAULT_TORCH_PYTHON, check_torch_python, torch_child_env

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("axion", "cdm", "no_sub")
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "deeplensesim_model_ii_sample.npz"


# ---- the timm side: runs in the torch Python, which has no deeplense_tf and no TensorFlow ----

def train_timm(arch: str, data: str, epochs: int, batch: int, seed: int, lr: float, out: str,
               threads: int | None = None) -> dict:
    import timm
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    arrays = np.load(data)
    x, y = arrays["train_x"], arrays["train_y"]

    def standardise(images):  # per image, as the DeepLense sub-projects' loaders do
        images = images.astype("float32")
        mean = images.mean(axis=(1, 2), keepdims=True)
        std = images.std(axis=(1, 2), keepdims=True)
        return torch.from_numpy(((images - mean) / np.maximum(std, 1e-8))[:, None])

    model = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=len(CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr)
    steps_per_epoch = -(-len(x) // batch)
    total, warmup = steps_per_epoch * epochs, steps_per_epoch

    def rate(step):  # linear warm-up over the first epoch, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)

    def augment(images):  # each image its own flips and 90-degree turn, as a Dataset transform would
        n = len(images)
        flip_w = torch.from_numpy(rng.random(n) < 0.5)[:, None, None, None]
        flip_h = torch.from_numpy(rng.random(n) < 0.5)[:, None, None, None]
        images = torch.where(flip_w, torch.flip(images, dims=(3,)), images)
        images = torch.where(flip_h, torch.flip(images, dims=(2,)), images)
        turns = torch.from_numpy(rng.integers(0, 4, n))
        return torch.stack([torch.rot90(image, int(k), dims=(1, 2)) for image, k in zip(images, turns)])
    started = time.perf_counter()
    model.train()
    epoch_loss = []  # the mean training loss of each epoch (training mode, augmented), as Keras logs "loss"
    for _ in range(epochs):
        order = rng.permutation(len(x))
        summed = 0.0
        for first in range(0, len(x), batch):
            index = order[first:first + batch]
            images = augment(standardise(x[index]))
            loss = torch.nn.functional.cross_entropy(model(images), torch.from_numpy(y[index]).long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            summed += float(loss.detach()) * len(index)
        epoch_loss.append(summed / len(x))
    seconds = time.perf_counter() - started
    model.eval()
    probabilities = {}
    with torch.no_grad():
        for name in [k[:-2] for k in arrays.files if k.endswith("_x") and k != "train_x"]:
            images = arrays[f"{name}_x"]
            parts = [torch.softmax(model(standardise(images[i:i + 256])), dim=1).numpy()
                     for i in range(0, len(images), 256)]
            probabilities[name] = np.concatenate(parts)
    np.savez(out, **probabilities)
    return {"train_seconds": seconds, "torch": torch.__version__, "timm": timm.__version__,
            "threads": torch.get_num_threads(), "epoch_loss": epoch_loss}


# ---- the parent: runs in the project's Python ------------------------------------------------

def load_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A simulated class-folder set as (images, label index in CLASSES)."""
    import pandas as pd

    table = pd.read_csv(folder / "metadata.csv")
    images = np.stack([np.load(folder / f) for f in table["file"]]).astype("float32")
    return images, table["class"].map(CLASSES.index).to_numpy("int64")


def load_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = np.load(path)
    return arrays["images"].astype("float32"), np.array([CLASSES.index(str(c)) for c in arrays["label"]], "int64")


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"auc": float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")),
            "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
            "nll": float(log_loss(labels, probabilities, labels=range(len(CLASSES))))}


def train_ours(args, sets: dict[str, Path], seed: int, out: Path) -> tuple[dict, float, list[float]]:
    """Our run on the same files; returns ({"best": the checkpoint it selects, "last": the last epoch's},
    its training seconds, its training loss by epoch)."""
    import keras
    import pandas as pd

    cmd = [sys.executable, "-m", "deeplense_tf.train", "--task", "classification", "--arch", args.arch,
           "--data", str(sets["train"]), "--val-data", str(sets["val"]), "--test-data", str(sets["test"]),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--init-seed", str(seed), "--out", str(out), *shlex.split(args.flags)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"our run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    (run,) = [p for p in out.iterdir() if (p / "history.csv").is_file()]
    class_names = json.loads((run / "data.json").read_text())["class_names"]
    if tuple(class_names) != CLASSES:
        raise SystemExit(f"{run}: classes {class_names}, expected {CLASSES}")
    import deeplense_tf.api  # noqa: F401  (registers our layers for load_model)

    models = {name: keras.models.load_model(run / "checkpoints" / f"{name}.keras", compile=False)
              for name in ("best", "last")}
    history = pd.read_csv(run / "history.csv")
    return models, float(history["epoch_seconds"].sum()), history["loss"].tolist()


def run_timm(args, data: Path, seed: int, out: Path) -> dict:
    job = {"arch": args.timm_arch or args.arch, "data": str(data), "epochs": args.epochs, "batch": args.batch_size,
           "seed": seed, "lr": args.lr, "out": str(out), "threads": args.threads}
    cmd = [args.torch_python, str(Path(__file__).resolve()), "--torch-child", json.dumps(job)]
    return child_result(cmd, "the timm run", env=torch_child_env())


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.timm_accuracy", __doc__)
    p.add_argument("--arch", default="resnet18", help="our arch (default %(default)s)")
    p.add_argument("--timm-arch", help="timm's model name where it differs from --arch")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="initialisation seeds of both sides")
    p.add_argument("--data-seed", type=int, default=7, help="simulation seed of the sets (default %(default)s)")
    p.add_argument("--train-per-class", type=int, default=700, help="(default %(default)s)")
    p.add_argument("--val-per-class", type=int, default=150, help="our run's validation set (default %(default)s)")
    p.add_argument("--test-per-class", type=int, default=300, help="our own test set (default %(default)s)")
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="DeepLenseSim reference images (.npz)")
    p.add_argument("--epochs", type=int, default=8, help="(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak rate of both (default %(default)s)")
    p.add_argument("--threads", type=int, help="torch threads (default every core)")
    p.add_argument("--flags", default="", help="further train flags of our side, quoted as one string")
    p.add_argument("--sides", nargs="+", choices=("ours", "timm"), default=["ours", "timm"], help="which sides run")
    p.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="a Python with torch and timm")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", type=Path, help="also write the rows here (rewritten after each seed)")
    p.add_argument("--torch-child", help=argparse.SUPPRESS)
    return p


def table(rows: list[dict], markdown: bool) -> str:
    header = ["seed", "side", "train s", "last train loss", "AUC own test", "acc own test", "NLL own test",
              "AUC reference", "acc reference"]
    columns = (("train_seconds", 0), ("last_train_loss", 3), ("test_auc", 4), ("test_accuracy", 3), ("test_nll", 3),
               ("reference_auc", 4), ("reference_accuracy", 3))
    lines = [[str(r["seed"]), r["side"], *(f"{r[k]:.{d}f}" for k, d in columns)] for r in rows]
    for side in dict.fromkeys(r["side"] for r in rows):
        mine = [r for r in rows if r["side"] == side]
        if len(mine) > 1:
            lines.append(["mean", side, *(f"{statistics.mean(r[k] for r in mine):.{d}f}" for k, d in columns)])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(line) + " |" for line in lines)])
    return "\n".join("  ".join(f"{c:>14}" for c in line) for line in [header, *lines])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.torch_child:
        print("RESULT " + json.dumps(train_timm(**json.loads(args.torch_child))), flush=True)
        return 0
    versions = check_torch_python(args.torch_python) if "timm" in args.sides else "not run"  # before any simulation
    if not args.reference.is_file():
        raise SystemExit(f"error: --reference {args.reference}: no such file")
    from deeplense_tf.cli import prepare_environment
    from deeplense_tf.sim.generate import cached_simulation

    prepare_environment()
    sizes = {"train": args.train_per_class, "val": args.val_per_class, "test": args.test_per_class}
    sets = {name: cached_simulation("model_ii", n, args.data_seed + i, noise="published", progress=False)
            for i, (name, n) in enumerate(sizes.items())}
    arrays = {"train": load_folder(sets["train"]), "test": load_folder(sets["test"]),
              "reference": load_reference(args.reference)}
    print(f"timm side: {versions}; {os.cpu_count()} cores; train {len(arrays['train'][1])}, own test "
          f"{len(arrays['test'][1])}, reference {len(arrays['reference'][1])} images", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="timm_accuracy_") as tmp:
        data = Path(tmp) / "sets.npz"
        np.savez(data, **{f"{name}_{part}": a for name, pair in arrays.items() for part, a in zip("xy", pair)})
        for seed in args.seeds:
            if "ours" in args.sides:
                load = os.getloadavg()[0]
                models, seconds, epoch_loss = train_ours(args, sets, seed, Path(tmp) / f"ours-{seed}")
                for checkpoint, model in models.items():  # the run's choice, and the last epoch as timm's
                    row = {"seed": seed, "side": "ours" if checkpoint == "best" else "ours (last epoch)",
                           "train_seconds": seconds, "load_before": load, "flags": args.flags,
                           "epoch_loss": epoch_loss, "last_train_loss": epoch_loss[-1]}
                    for name in ("test", "reference"):
                        images, labels = arrays[name]
                        row.update({f"{name}_{k}": v for k, v in
                                    scores(labels, model.predict(images[..., None], verbose=0)).items()})
                    rows.append(row)
            if "timm" in args.sides:
                load = os.getloadavg()[0]
                out = Path(tmp) / f"timm-{seed}.npz"
                info = run_timm(args, data, seed, out)
                probabilities = np.load(out)
                row = {"seed": seed, "side": "timm", "train_seconds": info["train_seconds"], "load_before": load,
                       "versions": f"torch {info['torch']}, timm {info['timm']}",
                       "epoch_loss": info["epoch_loss"], "last_train_loss": info["epoch_loss"][-1]}
                for name in ("test", "reference"):
                    row.update({f"{name}_{k}": v for k, v in scores(arrays[name][1], probabilities[name]).items()})
                rows.append(row)
            print("seed " + str(seed) + ": " + ", ".join(f"{r['side']} AUC {r['test_auc']:.4f} / {r['reference_auc']:.4f}"
                                                        for r in rows if r["seed"] == seed) + " (own test / reference)",
                  flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.markdown))
    print("training loss by epoch (training mode, augmented; ours with its head's dropout):")
    for r in rows:
        print(f"  seed {r['seed']} {r['side']}: " + " ".join(f"{v:.3f}" for v in r["epoch_loss"]))
    return 0


if __name__ == "__main__":
    # Run by path (the torch child), Python puts pipelines/ first on sys.path, where our
    # profile.py would shadow the standard library's (which torch imports).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
