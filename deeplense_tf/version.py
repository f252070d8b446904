"""The package's version: the one place it is written (setup.cfg reads it; ``--version`` prints it)."""

__version__ = "0.1.0"
