"""Shared command-line plumbing: environment set before TensorFlow loads, clean error exits."""

from __future__ import annotations

import os
import sys
from typing import Callable

from deeplense_tf.errors import UserError


def prepare_environment() -> None:
    """Set before TensorFlow is imported; a user's own setting always wins.

    oneDNN: TensorFlow leaves it off on AMD CPUs; on the 2-core EPYC it took ResNet50 training
    from 13 to 40 images/s (STACK.md, BENCHMARKS.md), and it is TF's default on Intel anyway.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_cli(job: Callable[[], object]) -> int:
    """Run ``job``; a ``UserError`` becomes one ``error:`` line and exit code 2, not a traceback."""
    try:
        job()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
