"""An endless, class-balanced stream of freshly simulated images from worker processes.

For a ``tf.data`` source (``tf.data.Dataset.from_generator(lambda: stream(...), ...)``) that
never repeats a lens: the data module wraps it; this module needs no TensorFlow. Global
position ``g`` is image ``g // C`` of class ``g % C`` (C classes), with the same per-image seed
as ``simulate``: use a seed for streaming that no stored evaluation set uses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np


def render_block(preset: str, seed: int, noise: str, geometry: str, start: int, count: int) -> list[tuple]:
    """Global positions start .. start+count-1 as (image, class_position, metadata)."""
    from .simulate import get_preset, simulate_one

    classes = get_preset(preset).classes
    items = []
    for g in range(start, start + count):
        position, index = g % len(classes), g // len(classes)
        image, meta = simulate_one(preset, classes[position], index, seed, noise, geometry)
        items.append((image, position, meta))
    return items


def stream(preset: str, seed: int, workers: int | None = None, noise: str = "on",
           geometry: str = "deeplensesim", start: int = 0, block: int = 32) -> Iterator[tuple[np.ndarray, int, dict]]:
    """Yield (float32 image, class position, metadata) forever, in global order from ``start``.

    The output does not depend on ``workers``; at most ``2 * workers`` blocks are in flight.
    """
    from .simulate import _check_args, _pool_context, default_workers

    _check_args(preset, 1, seed, noise, geometry, workers, None)
    workers = workers or default_workers()
    args = (preset, seed, noise, geometry)
    if workers == 1:
        while True:
            yield from render_block(*args, start, block)
            start += block
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        pending: deque = deque()
        try:
            while True:
                while len(pending) < 2 * workers:
                    pending.append(pool.submit(render_block, *args, start, block))
                    start += block
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
