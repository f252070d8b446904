"""An endless, class-balanced stream of freshly simulated images from worker processes.

For a ``tf.data`` source (``tf.data.Dataset.from_generator(lambda: stream(...), ...)``) that
never repeats a lens: ``deeplense_tf.data.stream`` wraps it for training (``--data sim-stream:<preset>``);
this module needs no TensorFlow. Global position ``g`` is image ``g // C`` of class
``classes[g % C]`` (the C streamed classes, by default all of the preset's, in preset order),
with the same per-image seed as ``simulate``, so streaming one class (``classes=("axion",)``)
gives exactly that class's images of the full stream: use a seed for streaming that no stored
evaluation set uses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from deeplense_tf.errors import ConfigError
from deeplense_tf.sim.generate import check_args, get_preset, simulate_one
from deeplense_tf.sim.workers import default_workers, process_pool


def render_block(preset: str, seed: int, noise: str, geometry: str, start: int, count: int,
                 classes: tuple[str, ...] | None = None) -> list[tuple]:
    """Global positions start .. start+count-1 as (image, class_position, metadata)."""
    p = get_preset(preset)
    cycle = tuple(classes) if classes else p.classes
    items = []
    for g in range(start, start + count):
        cls, index = cycle[g % len(cycle)], g // len(cycle)
        image, meta = simulate_one(p, cls, index, seed, noise, geometry)
        items.append((image, p.classes.index(cls), meta))
    return items


def stream(preset: str, seed: int, workers: int | None = None, noise: str = "on",
           geometry: str = "deeplensesim", start: int = 0, block: int = 32,
           classes: Sequence[str] | None = None) -> Iterator[tuple[np.ndarray, int, dict]]:
    """Yield (float32 image, class position, metadata) forever, in global order from ``start``.

    ``classes``: stream only these classes of the preset (e.g. the ones that carry a regression
    target); the class position stays the preset's. The output does not depend on ``workers``;
    at most ``2 * workers`` blocks are in flight.
    """
    p = check_args(preset, 1, seed, noise, geometry, workers, None)
    classes = check_classes(p.name, p.classes, classes)
    workers = workers or default_workers()
    args = (preset, seed, noise, geometry)
    if workers == 1:
        while True:
            yield from render_block(*args, start, block, classes)
            start += block
    with process_pool(workers) as pool:
        pending: deque = deque()
        try:
            while True:
                while len(pending) < 2 * workers:
                    pending.append(pool.submit(render_block, *args, start, block, classes))
                    start += block
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def check_classes(preset: str, known: tuple[str, ...], classes: Sequence[str] | None) -> tuple[str, ...] | None:
    """None (all classes), or distinct classes of the preset, kept in the preset's order."""
    if classes is None:
        return None
    chosen = tuple(str(c) for c in classes)
    unknown = sorted(set(chosen) - set(known))
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ConfigError(f"classes to stream must be distinct classes of preset {preset} ({', '.join(known)}). "
                          f"Received: classes={list(chosen)}")
    return tuple(c for c in known if c in chosen)
