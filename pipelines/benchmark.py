"""How fast does the input path feed training? Images/s of each reader, and train-step time with real input.

    python -m pipelines.benchmark                 # full run: prints its BENCHMARKS.md section
    python -m pipelines.benchmark --write-benchmarks   # ... and records it (BENCHMARKS.md, pipelines/benchmark.csv)
    python -m pipelines.benchmark --smoke --json bench.json   # CI-sized, about a minute on 2 cores

Each pipeline is timed over whole epochs of a synthetic DeepLense-like set written to a
temporary folder (one ``.npy`` per image, warm page cache), consumed inside the TensorFlow
graph (``Dataset.reduce``), so the number is what the pipeline can deliver, not what a Python
loop can pull. Repeats are interleaved and the median is reported (shared machines drift).

| row | what |
|---|---|
| naive | a Python loop: ``np.load`` each file, ``np.stack`` each batch |
| per_file | ``create_dataset`` over per-file ``.npy`` (default reader: blocks of files, one ``pread`` each) |
| per_file_tf | the same with ``file_reader="tf"``: ``read_file`` + one ``decode_raw`` per chunk of files |
| per_file_cached | the tf reader, decoded once and cached in memory (epochs after the first) |
| packed | ``create_dataset`` over one array in memory |
| shards | ``create_dataset`` over ``pack``'s memory-mapped ``.npy`` shards (not loaded into memory) |
| tfrecord | the alternative format: one record per image, batched ``decode_raw`` (for the format choice) |
| packed_augment | ``packed`` with flips / rotations in the pipeline |

Train step (``--arch``, default efficientnet_b0, mobilenet_v3_small with ``--smoke``): the median time between steps of ``model.fit``
on a resident synthetic batch vs on the real pipeline (shards; per-file and in-memory too when
not ``--smoke``), and with augmentation in the model vs in the pipeline.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplense_tf.cli import command_parser, prepare_environment

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Input pipeline"
TRACKED_CSV = ROOT / "pipelines" / "benchmark.csv"  # the CSV the BENCHMARKS.md section cites
EPOCH_IMAGES = 27_000  # images per timed run (several epochs of a small set)


def make_files(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``root/<class>/*.npy``, float32 (size, size) like DeepLense Model II files, 3 classes."""
    rng = np.random.default_rng(seed)
    classes = ("axion", "cdm", "no_sub")
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cls = classes[i % 3]
        np.save(root / cls / f"{cls}_{i}.npy", rng.random((size, size), dtype=np.float32) + 0.01)
    return root


def naive_loop(paths: list[str], batch_size: int, epochs: int = 1, seed: int = 0) -> int:
    """The baseline: what a first hand-written loader does."""
    rng = np.random.default_rng(seed)
    seen = 0
    for _ in range(epochs):
        order = rng.permutation(len(paths))
        for start in range(0, len(paths), batch_size):
            batch = np.stack([np.load(paths[i]) for i in order[start:start + batch_size]])[..., None]
            seen += len(batch)
    return seen


def count_images(ds, epochs: int = 1) -> int:
    """Images in ``epochs`` passes, drained inside the graph (steady state: the epochs run back to back)."""
    import tensorflow as tf

    ds = ds.repeat(epochs) if epochs > 1 else ds
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.cast(tf.shape(batch[0])[0], tf.int64)))


def time_rates(runs: dict, repeats: int) -> dict[str, float]:
    """Images per wall second (median) and per CPU second of each ``name -> callable returning images seen``.

    Repeats are interleaved. CPU seconds (all threads of this process) are less disturbed by
    other jobs on a shared machine; wall seconds are what training sees.
    """
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            seen = run()
            wall[name].append(seen / (time.perf_counter() - start))
            cpu[name].append(seen / max(time.process_time() - start_cpu, 1e-9))
    rates = {name: float(np.median(values)) for name, values in wall.items()}
    rates.update({f"{name}_images_per_cpu_s": float(np.median(values)) for name, values in cpu.items()})
    return rates


def write_tfrecord(path: Path, images: np.ndarray) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            writer.write(np.ascontiguousarray(image, np.float32).tobytes())


def tfrecord_dataset(path: Path, labels: np.ndarray, image_shape, batch_size: int, seed: int = 0):
    """The TFRecord contender, written as fairly as we could: big read buffer, batched decode."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset([str(path)], buffer_size=16 << 20)
    ds = tf.data.Dataset.zip(records, tf.data.Dataset.from_tensor_slices(labels))
    ds = ds.shuffle(min(len(labels), 10_000), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    ds = ds.map(lambda raw, y: (tf.reshape(tf.io.decode_raw(raw, tf.float32), (-1, *image_shape)), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def pipeline_rates(work: Path, n: int, size: int, batch_size: int, repeats: int, tfrecord: bool,
                   epoch_images: int = EPOCH_IMAGES) -> tuple[dict, dict]:
    """Images/s of every reader at one image size; returns (rates, the data sets for the step timing)."""
    from deeplense_tf.data.pipeline import create_dataset
    from deeplense_tf.data.shards import write_shards
    from deeplense_tf.data.sources import load_data
    from deeplense_tf.models.augment import augmenter

    files = make_files(work / f"files{size}", n, size)
    started = time.perf_counter()
    per_file = load_data(str(files), validate="quick", stream=True)
    scan_s = time.perf_counter() - started
    started = time.perf_counter()
    resident = load_data(str(files))
    full_scan_s = time.perf_counter() - started
    labels = np.searchsorted(["axion", "cdm", "no_sub"], resident.table["class"]).astype(np.int32)
    started = time.perf_counter()
    write_shards(resident, work / f"shards{size}", overwrite=True)
    pack_s = time.perf_counter() - started
    shards = load_data(str(work / f"shards{size}"), stream=True, validate="quick")
    shard_labels = np.searchsorted(["axion", "cdm", "no_sub"], shards.table["class"]).astype(np.int32)
    paths = [str(files / f) for f in resident.table["file"]]
    cached = create_dataset(per_file.images, labels, batch_size, True, cache=True)
    count_images(cached)  # the first epoch fills the cache
    epochs = max(1, -(-epoch_images // n))  # enough back-to-back epochs that start-up costs are amortised
    sets = {
        "per_file": create_dataset(per_file.images, labels, batch_size, True, deterministic=False),
        "per_file_tf": create_dataset(per_file.images, labels, batch_size, True, deterministic=False, file_reader="tf"),
        "packed": create_dataset(resident.images, labels, batch_size, True, deterministic=False),
        "shards": create_dataset(shards.images, shard_labels, batch_size, True, deterministic=False),
        "packed_augment": create_dataset(resident.images, labels, batch_size, True, deterministic=False,
                                         augment=augmenter(0)),
    }
    runs = {
        "naive": lambda: naive_loop(paths, batch_size, epochs),
        "per_file": lambda: count_images(sets["per_file"], epochs),
        "per_file_tf": lambda: count_images(sets["per_file_tf"], epochs),
        "per_file_cached": lambda: count_images(cached, epochs),
        "packed": lambda: count_images(sets["packed"], epochs),
        "shards": lambda: count_images(sets["shards"], epochs),
        "packed_augment": lambda: count_images(sets["packed_augment"], epochs),
    }
    if tfrecord:
        write_tfrecord(work / f"images{size}.tfrecord", resident.images)
        records = tfrecord_dataset(work / f"images{size}.tfrecord", labels, resident.images.shape[1:], batch_size)
        runs["tfrecord"] = lambda: count_images(records, epochs)
    rates = time_rates(runs, repeats)
    rates.update({"scan_quick_s": scan_s, "scan_full_s": full_scan_s, "pack_s": pack_s})
    return rates, {"per_file": (per_file.images, labels), "packed": (resident.images, labels),
                   "shards": (shards.images, shard_labels)}


def step_callback():
    """Keras callback: wall-clock time at the end of every training step."""
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return StepTimes()


def step_times(arch: str, data: dict, size: int, batch_size: int, steps: int, repeats: int,
               smoke: bool) -> dict[str, float]:
    """Seconds per train step (median wall gap between steps, and process CPU seconds per step).

    Model "aug" has the augmentation layers (the default model); it is fed a resident synthetic
    batch and the real pipelines. Model "plain" has none and gets batches augmented in the
    pipeline. Every (model, feed) pair runs ``steps`` steps per repeat, all pairs interleaved,
    so drift on a shared machine hits them alike.
    """
    import keras
    import tensorflow as tf

    from deeplense_tf.config import ModelConfig
    from deeplense_tf.data.pipeline import create_dataset
    from deeplense_tf.models.augment import augmenter
    from deeplense_tf.models.build import create_model

    def model_with(augment: bool):
        keras.utils.set_random_seed(0)
        model = create_model(ModelConfig(arch=arch, task="classification", augment=augment), (size, size, 1),
                             n_classes=3, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        return model

    def real(name, augment=False):
        return lambda: create_dataset(*data[name], batch_size, True, deterministic=False,
                                      augment=augmenter(0) if augment else None).repeat()

    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch_size, size, size, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 3, batch_size).astype(np.int32))
    # The same batch every step, already in memory; unbatch/batch gives it the real pipeline's
    # element spec (unknown batch size), so Keras does not trace the train step a second time.
    synthetic = tf.data.Dataset.from_tensors((x, y)).repeat().unbatch().batch(batch_size).prefetch(2)
    models = {"aug": model_with(True)}
    runs = {"synthetic": ("aug", lambda: synthetic), "real": ("aug", real("shards"))}
    if not smoke:
        models["plain"] = model_with(False)
        runs.update({"real_per_file": ("aug", real("per_file")), "real_packed": ("aug", real("packed")),
                     "augment_in_pipeline": ("plain", real("shards", augment=True)),
                     "no_augment": ("plain", real("shards"))})
    log(f"built {', '.join(m.name for m in models.values())}")
    for name, (model, feed) in runs.items():  # trace each model once, warm every feed up
        models[model].fit(feed(), steps_per_epoch=3, epochs=1, verbose=0)
    log("traced and warmed up")
    gaps: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (model, feed) in runs.items():
            times, started = step_callback(), time.process_time()
            models[model].fit(feed(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[times])
            cpu[name].append((time.process_time() - started) / steps)
            gaps[name].extend(np.diff(times.stamps).tolist())  # gaps between step ends: no start-up
    results = {f"step_{name}_s": float(np.median(values)) for name, values in gaps.items()}
    results.update({f"step_{name}_cpu_s": float(np.median(values)) for name, values in cpu.items()})
    if not smoke:
        results["step_augment_in_model_s"] = results["step_real_s"]
        results["step_augment_in_model_cpu_s"] = results["step_real_cpu_s"]
    return results


def machine() -> str:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu}, {os.cpu_count()} cores (shared: load average {load} when the run ended), "
            f"TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={onednn}, no GPU")


def flatten(per_size: dict[int, dict], steps: dict, main_size: int) -> dict:
    """One flat object: ``<reader>_images_per_s`` (wall), ``..._images_per_cpu_s``, timings in ``_s``;
    the main size without suffix, other sizes suffixed ``_<size>px``."""
    result = {}
    for size, rates in per_size.items():
        suffix = "" if size == main_size else f"_{size}px"
        for key, value in rates.items():
            name = key if key.endswith("_s") else f"{key}_images_per_s"
            result[name + suffix] = value
    result.update(steps)
    for kind in ("", "_cpu"):
        if f"step_real{kind}_s" in steps:
            result[f"step_real_over_synthetic{kind}"] = steps[f"step_real{kind}_s"] / steps[f"step_synthetic{kind}_s"]
        if f"step_augment_in_model{kind}_s" in steps:
            result[f"step_augment_pipeline_over_model{kind}"] = (steps[f"step_augment_in_pipeline{kind}_s"]
                                                                 / steps[f"step_augment_in_model{kind}_s"])
    return result


READERS = ("naive", "per_file", "per_file_tf", "per_file_cached", "packed", "shards", "tfrecord", "packed_augment")


def markdown_tables(result: dict, sizes: list[int], main_size: int) -> list[str]:
    """Readers x sizes (images/s, ratio to the naive loop, images per CPU-second), then step times."""
    head = ["reader"]
    for size in sizes:
        head += [f"{size}px images/s", "x naive", f"{size}px images/CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for reader in READERS:
        cells = [reader]
        for size in sizes:
            suffix = "" if size == main_size else f"_{size}px"
            wall = result.get(f"{reader}_images_per_s{suffix}")
            cpu = result.get(f"{reader}_images_per_cpu_s{suffix}")
            naive = result.get(f"naive_images_per_s{suffix}")
            cells += [f"{wall:,.0f}" if wall else "-", f"{wall / naive:.1f}x" if wall and naive else "-",
                      f"{cpu:,.0f}" if cpu else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| measure | value |", "|---|---:|"]
    for key, value in result.items():
        if "images_per" not in key:
            lines.append(f"| {key} | {value:.4g} |")
    return lines


def print_table(result: dict) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:,.0f}" if "images_per" in key else f"{value:.4g}"
        print(f"{key:<{width}}  {shown:>12}")


def write_outputs(result: dict, args, sizes: list[int]) -> None:
    """The run's BENCHMARKS.md section: printed; with --write-benchmarks it replaces the tracked section
    and pipelines/benchmark.csv (a measurement on a busy machine must not overwrite the record unasked)."""
    csv_paths = [Path(p) for p in (args.csv, TRACKED_CSV if args.write_benchmarks else None) if p]
    for csv_path in csv_paths:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["measure", "value"])
            writer.writerows((k, f"{v:.6g}") for k, v in result.items())
    csv_path = csv_paths[-1] if csv_paths else None
    shown = [a for i, a in enumerate(sys.argv[1:]) if a not in ("--json", "--notes", "--csv", "--write-benchmarks")
             and (i == 0 or sys.argv[i] not in ("--json", "--notes", "--csv"))]
    command = "python -m pipelines.benchmark " + " ".join(shown)
    lines = [SECTION, "",
             f"Command: `{command.strip()}`  ", f"Machine: {machine()}  ",
             f"Date: {datetime.date.today().isoformat()}; {args.samples} files at {args.size} px "
             f"({max(args.batch_size * 4, args.samples // 3)} at {args.extra_size} px), batch {args.batch_size}; "
             "pipelines: "
             f"median of {args.repeats} interleaved repeats, consumed in-graph (`Dataset.reduce`); train steps of "
             f"`{args.arch}`: {2 * args.repeats} alternating fits of {args.steps} steps per feed. "
             + (f"CSV: `{csv_path.relative_to(ROOT) if csv_path.is_relative_to(ROOT) else csv_path}`." if csv_path
                else ""),
             ""]
    lines += markdown_tables(result, sizes, args.size)
    notes = Path(args.notes) if args.notes else None
    if notes and notes.is_file():
        lines += ["", notes.read_text().strip()]
    section = "\n".join(lines) + "\n"
    if args.write_benchmarks:
        replace_section(ROOT / "BENCHMARKS.md", section)
        print(f"recorded in BENCHMARKS.md and {TRACKED_CSV.relative_to(ROOT)}")
    else:
        print(f"\n{section}\nnot recorded: --write-benchmarks replaces this section of BENCHMARKS.md")


def replace_section(path: Path, section: str) -> None:
    """Replace (or append) only our section; other sections belong to others."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\nMeasured numbers, each with its command, machine and date.\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
        text = text.replace(section + "## ", section + "\n## ")
    path.write_text(text)


STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m pipelines.benchmark", __doc__)
    p.add_argument("--smoke", action="store_true", help="small and quick (CI): one size, fewer files and steps")
    p.add_argument("--json", help="write the results as one flat JSON object")
    p.add_argument("--arch", help="backbone for the train-step timing (default efficientnet_b0; --smoke: "
                   "mobilenet_v3_small, whose first step traces in ~30 s instead of 60-100 s on 2 cores)")
    p.add_argument("--samples", type=int, help="files per image size (default 9000, --smoke 1200)")
    p.add_argument("--size", type=int, default=64, help="main image side")
    p.add_argument("--extra-size", type=int, default=150, help="second image side, not in --smoke")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--steps", type=int, help="train steps per timed fit (default 15, --smoke 6); fits of every "
                   "feed alternate, 2 x --repeats times (3 with --smoke)")
    p.add_argument("--repeats", type=int, help="interleaved repeats (default 3, --smoke 1)")
    p.add_argument("--write-benchmarks", action="store_true",
                   help="record the run: replace its section of the tracked BENCHMARKS.md and write "
                   "pipelines/benchmark.csv (default: print the section only; not with --smoke)")
    p.add_argument("--csv", help="also write the measures to this CSV file (not with --smoke)")
    p.add_argument("--notes", help="markdown file appended under the table of the section")
    p.add_argument("--work", help="folder for the generated data (default: a temporary folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.samples = args.samples or (1200 if args.smoke else 9000)
    args.arch = args.arch or ("mobilenet_v3_small" if args.smoke else "efficientnet_b0")
    args.steps = args.steps or (6 if args.smoke else 15)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    prepare_environment()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        sizes = [args.size] if args.smoke else [args.size, args.extra_size]
        per_size, data = {}, None
        for size in sizes:
            n = args.samples if size == args.size else max(args.batch_size * 4, args.samples // 3)
            rates, sets = pipeline_rates(work, n, size, args.batch_size, args.repeats, tfrecord=True,
                                         epoch_images=n * 6 if args.smoke else EPOCH_IMAGES)
            log(f"{size}px pipelines timed")
            per_size[size] = rates
            data = sets if size == args.size else data
            print(f"{size}px: " + ", ".join(f"{k} {v:,.4g}" for k, v in rates.items() if "cpu" not in k), flush=True)
        log("timing train steps")
        steps = step_times(args.arch, data, args.size, args.batch_size, args.steps,
                           3 if args.smoke else 2 * args.repeats, args.smoke)
    result = flatten(per_size, steps, args.size)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.smoke:
        write_outputs(result, args, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
