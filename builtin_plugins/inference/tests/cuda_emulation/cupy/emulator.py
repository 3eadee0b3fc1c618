"""Controls of the CPU emulator that real CuPy does not have (tests use them).

- :func:`schedule`: the order blocks, and threads between barriers, run in.
- :data:`LAUNCHES`: every launch so far, to check which kernels a test exercised.
- :class:`EmulatedLaunchError`: what a launch that went wrong raises.
"""

from __future__ import annotations

from ._kernel import LAUNCHES, SCHEDULES, EmulatedLaunchError, Launch, schedule
from ._translate import CompileException

__all__ = ["LAUNCHES", "SCHEDULES", "CompileException", "EmulatedLaunchError", "Launch", "schedule"]
