"""A CPU emulator of CuPy and of CUDA C kernels, to test the ``cuda`` device on any machine.

This folder goes first on ``PYTHONPATH`` of a subprocess, where ``import cupy`` then finds
:mod:`cupy <.cupy>` here: see its docstring for what the emulator checks and what it
cannot show. ``test_cuda_kernels_emulated.py`` is the test that uses it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PATH"]

#: The folder to put on ``PYTHONPATH`` (it holds the ``cupy`` package).
PATH = Path(__file__).resolve().parent
