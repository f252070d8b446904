"""A measurement in a child process that prints its result as one ``RESULT <json>`` line."""

from __future__ import annotations

import json
import subprocess


def child_result(cmd: list[str], what: str, **run_kwargs) -> dict:
    """Run ``cmd`` and return its last ``RESULT`` line's JSON; SystemExit naming ``what`` if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, **run_kwargs)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])
