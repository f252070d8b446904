"""Where generated data lives: ``$DEEPLENSE_TF_CACHE`` or ``~/.cache/deeplense_tf``."""

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("DEEPLENSE_TF_CACHE") or Path.home() / ".cache" / "deeplense_tf"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
