"""Task types: the units of work that tasks and workflow steps run.

A plugin contributes them through ``noa_register_task_types``::

    class Resize(msgspec.Struct, frozen=True):
        path: str
        width: int

    async def resize(ctx: TaskContext, job: Resize) -> dict[str, Any]:
        await ctx.progress(0.5, "decoded")
        return {"path": job.path, "width": job.width}

    @hookimpl
    def noa_register_task_types(task_types: Registry[TaskType]) -> None:
        task_types.add("images.resize", TaskType(resize, input_type=Resize, timeout_s=30))

The orchestration plugin validates a task's input when it is submitted (``input_type``
or ``validate``), runs the handler on a worker with the task's timeout, stores what it
returns (anything ``msgspec.json`` encodes) and retries a handler that raises, with
backoff, up to ``max_retries`` times. Delivery is at least once: a worker that dies
mid-task has its task run again, so a handler with an external effect should apply it
once per ``ctx.task_id`` (``idempotent=True``, the default). A task type that can't
promise that says ``idempotent=False``: an interrupted run then ends the task as
``dead`` rather than running it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = [
    "InvalidTaskInput",
    "TaskContext",
    "TaskFailed",
    "TaskHandler",
    "TaskType",
]


@runtime_checkable
class TaskContext(Protocol):
    """What a handler learns about the run it is part of."""

    @property
    def task_id(self) -> str:
        """The task's id: stable across retries and redeliveries (key effects by it)."""
        ...

    @property
    def attempt(self) -> int:
        """This run's number, from 1."""
        ...

    @property
    def cancelled(self) -> bool:
        """``True`` once the task was cancelled; the handler is also cancelled
        (``asyncio.CancelledError``) at its next ``await``."""
        ...

    async def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (``fraction`` in 0..1) on the task, readable by clients."""
        ...


TaskHandler = Callable[[TaskContext, Any], Awaitable[Any]]


class InvalidTaskInput(ValueError):
    """A task's input does not fit its task type, raised while the type parses it:
    answered 422 at submit, and a run whose stored input no longer parses goes dead
    (``invalid_input``). Raised by a handler itself it is an ordinary failure, retried
    like any other: raise ``TaskFailed(..., retry=False)`` for one that should not be."""


class TaskFailed(Exception):
    """Raised by a handler to fail its run with a code of its own; ``retry=False`` sends
    the task to the dead letters at once instead of retrying it."""

    def __init__(self, message: str, *, code: str = "task_failed", retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry = retry


class TaskType:
    """One kind of task: its handler, how its input is checked, and its defaults.

    ``input_type``: a ``msgspec.Struct`` class the JSON input is converted to (the
    handler receives the instance). ``validate``: a callable given the input dict that
    returns what the handler receives, or raises ``ValueError``/``TypeError``. With
    neither, the handler receives the dict. ``timeout_s`` and ``max_retries`` are the
    defaults a submission may override.
    """

    __slots__ = (
        "description",
        "handler",
        "idempotent",
        "input_type",
        "max_retries",
        "timeout_s",
        "validate",
    )

    def __init__(
        self,
        handler: TaskHandler,
        *,
        input_type: type[msgspec.Struct] | None = None,
        validate: Callable[[dict[str, Any]], Any] | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        idempotent: bool = True,
        description: str = "",
    ) -> None:
        if not callable(handler):
            raise TypeError(f"a task type's handler must be callable, not {handler!r}")
        if input_type is not None and validate is not None:
            raise TypeError("give a task type input_type or validate, not both")
        if input_type is not None and not (
            isinstance(input_type, type) and issubclass(input_type, msgspec.Struct)
        ):
            raise TypeError(f"input_type must be a msgspec.Struct class, not {input_type!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries!r}")
        self.handler = handler
        self.input_type = input_type
        self.validate = validate
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.idempotent = idempotent
        self.description = description

    def parse_input(self, raw: dict[str, Any]) -> Any:
        """What the handler receives for the JSON input ``raw``; :class:`InvalidTaskInput`
        (saying which field and why) when it does not fit."""
        if self.input_type is not None:
            try:
                return msgspec.convert(raw, self.input_type)
            except msgspec.ValidationError as exc:
                raise InvalidTaskInput(str(exc)) from None
        if self.validate is not None:
            try:
                return self.validate(raw)
            except (ValueError, TypeError) as exc:
                raise InvalidTaskInput(str(exc) or type(exc).__name__) from None
        return raw

    def __repr__(self) -> str:
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"TaskType({name}, timeout_s={self.timeout_s}, max_retries={self.max_retries})"
