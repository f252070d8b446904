"""Parameter counts of every architecture at 64x64 with 1 channel, cached in ``param_counts.json``
(backbones alone; autoencoders whole).

``--list-archs`` prints them, and building all ~56 backbones takes minutes on a 2-core CPU,
so the counts are read from the table shipped beside this module. A name missing from the
table (a newly registered architecture, a ``fusion:`` combination) is built on the spot.
``tests/test_param_counts.py`` rebuilds a few entries, so a stale table fails a test.
Update the table after adding or changing an architecture:

    python -m deeplense_tf.models.param_counts vit cvt_13  # rebuilds these entries only
    python -m deeplense_tf.models.param_counts             # rebuilds every entry (minutes)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras

from deeplense_tf.cli import prepare_environment, run_cli
from deeplense_tf.models.autoencoders import create_autoencoder
from deeplense_tf.models.registry import ARCHS, create_backbone, get_arch, input_plan, list_archs
from deeplense_tf.runs import atomic_write_text

TABLE = Path(__file__).with_name("param_counts.json")
IMAGE_SHAPE = (64, 64, 1)  # the DeepLense image size; smaller minimum sizes are raised (Inception: 75)


def count_params(name: str) -> int:
    """Build the backbone alone (no preprocessing, no head) as ``create_model`` would at 64x64x1;
    an autoencoder whole (it has no separate backbone)."""
    if "anomaly" in get_arch(name).tasks:
        return int(create_autoencoder(name, IMAGE_SHAPE).count_params())
    return int(create_backbone(name, input_plan(name, IMAGE_SHAPE).shape).count_params())


def load_table() -> dict[str, int]:
    if not TABLE.is_file():
        return {}
    return {name: int(n) for name, n in json.loads(TABLE.read_text())["params"].items()}


def param_count(name: str, table: dict[str, int] | None = None) -> int:
    """The cached count of ``name``, or a fresh build for a name the table lacks."""
    table = load_table() if table is None else table
    return table[name] if name in table else count_params(name)


def format_count(n: int) -> str:
    """4012345 -> "4.0M", 52340 -> "52.3K": the width of a column, the precision one needs."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def write_table(names: list[str]) -> dict[str, int]:
    """Rebuild the named backbones' entries (others kept, unregistered ones dropped) and write the table."""
    counts = {name: n for name, n in load_table().items() if name in ARCHS}
    for name in names:
        counts[name] = count_params(name)
        keras.backend.clear_session()  # the largest backbones hold ~1.4 GB each
        print(f"{name:<28} {counts[name]:>12,d}", flush=True)
    doc = {"image_shape": list(IMAGE_SHAPE), "note": "backbone only (autoencoders whole), weights=None; regenerate with "
           "python -m deeplense_tf.models.param_counts [NAME...]", "params": dict(sorted(counts.items()))}
    atomic_write_text(TABLE, json.dumps(doc, indent=1) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    prepare_environment()

    def job():
        for name in names:
            get_arch(name)  # a typo fails before minutes of building
        write_table(names or list_archs())
        print(f"wrote {TABLE}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
