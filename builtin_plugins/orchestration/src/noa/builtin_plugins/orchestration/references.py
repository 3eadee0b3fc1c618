"""References from a workflow step's input to earlier steps' outputs.

A reference is a JSON object with one key, ``$ref``, whose value is a dotted path
``<step>.output[.<key or index>...]``::

    {"type": "ingest", "input": {"collection": "docs",
                                  "documents": {"$ref": "split.output.documents"}}}

It may appear anywhere in an input (inside objects and lists) and is replaced by the
value it points to when the step becomes runnable. A key made of digits indexes a list
(``embed.output.embeddings.0``). A path that leads nowhere fails the step with
``invalid_reference``, which does not retry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["REF_KEY", "BrokenReference", "Reference", "find_references", "resolve"]

REF_KEY = "$ref"


class BrokenReference(ValueError):
    """A reference that is malformed, or whose path leads nowhere in the output."""


class Reference:
    __slots__ = ("path", "step", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts = text.split(".") if isinstance(text, str) else []
        if len(parts) < 2 or parts[1] != "output" or not all(parts):
            raise BrokenReference(
                f"reference {text!r} is not of the form '<step>.output[.<key or index>...]'"
            )
        self.step = parts[0]
        self.path = tuple(parts[2:])

    def follow(self, output: Any) -> Any:
        value = output
        walked = f"{self.step}.output"
        for part in self.path:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                kind = type(value).__name__ if value is not None else "null"
                raise BrokenReference(
                    f"reference {self.text!r}: {walked} (a {kind}) has no {part!r}"
                )
            walked = f"{walked}.{part}"
        return value


def _as_reference(value: Any) -> Reference | None:
    if isinstance(value, Mapping) and len(value) == 1 and REF_KEY in value:
        raw = value[REF_KEY]
        if not isinstance(raw, str):
            raise BrokenReference(f"a {REF_KEY!r} value must be a string, not {raw!r}")
        return Reference(raw)
    return None


def find_references(value: Any) -> Iterator[Reference]:
    """Every reference in ``value``, depth first (raises on a malformed one)."""
    ref = _as_reference(value)
    if ref is not None:
        yield ref
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from find_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from find_references(item)


def resolve(value: Any, outputs: Mapping[str, Any]) -> Any:
    """``value`` with each reference replaced by what it points to in ``outputs``
    (step id -> that step's output)."""
    ref = _as_reference(value)
    if ref is not None:
        if ref.step not in outputs:
            raise BrokenReference(f"reference {ref.text!r}: step {ref.step!r} has no output")
        return ref.follow(outputs[ref.step])
    if isinstance(value, Mapping):
        return {key: resolve(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, outputs) for item in value]
    return value
