"""``cupy.cuda`` of the CPU emulator: launches run to completion, so streams are no-ops."""

from __future__ import annotations

__all__ = ["Stream", "get_current_stream"]


class Stream:
    """The one stream: every launch has finished by the time it returns."""

    def synchronize(self) -> None:
        return None


_STREAM = Stream()


def get_current_stream() -> Stream:
    return _STREAM
