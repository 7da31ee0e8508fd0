"""The ``cure`` command line: one module per command (``cure_cli.<command>``), routed by :mod:`cure_cli.main`."""

from cure_cli.main import main

__all__ = ["main"]
