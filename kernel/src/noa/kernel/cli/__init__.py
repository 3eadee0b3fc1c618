"""The ``noa`` command."""

from noa.kernel.cli._main import main

__all__ = ["main"]
