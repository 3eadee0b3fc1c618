"""Checks a workflow submission before anything is stored: each refusal is a 422 whose
message and ``details.step`` name the step at fault.

Refused: duplicate step ids, unknown task types, ``depends_on`` naming an unknown step
(or the step itself), cycles, malformed references, references to an unknown step or
to one that is not among the step's (transitive) dependencies, and inputs their task
type refuses. An input holding references is checked by its task type once they are
resolved (a misfit then fails the step with ``invalid_input``).
"""

from __future__ import annotations

from collections.abc import Mapping

from noa.builtin_plugins.orchestration.references import BrokenReference, find_references
from noa.builtin_plugins.orchestration.values import NewStep, NewWorkflow
from noa.plugin_sdk.errors import Unprocessable
from noa.plugin_sdk.tasks import InvalidTaskInput, TaskType

__all__ = ["check_workflow"]


def _refuse(step: str, message: str, code: str) -> Unprocessable:
    return Unprocessable(
        f"step {step!r}: {message}", code=code, param="steps", details={"step": step}
    )


def check_workflow(
    workflow: NewWorkflow, task_types: Mapping[str, TaskType], max_steps: int
) -> list[str]:
    """The step ids in an order where each comes after its dependencies."""
    if len(workflow.steps) > max_steps:
        raise Unprocessable(
            f"{len(workflow.steps)} steps; at most {max_steps} (orchestration.max_workflow_steps)",
            code="too_many_steps",
            param="steps",
        )
    steps: dict[str, NewStep] = {}
    for step in workflow.steps:
        if step.id in steps:
            raise _refuse(step.id, "the id is used by another step", "duplicate_step")
        steps[step.id] = step
    for step in workflow.steps:
        if step.type not in task_types:
            known = ", ".join(sorted(task_types)) or "none"
            raise _refuse(
                step.id,
                f"unknown task type {step.type!r} (registered: {known})",
                "unknown_task_type",
            )
        for dependency in step.depends_on:
            if dependency == step.id:
                raise _refuse(step.id, "it depends on itself", "cyclic_workflow")
            if dependency not in steps:
                raise _refuse(step.id, f"depends_on names no step {dependency!r}", "unknown_step")
    order = _topological(workflow.steps)
    ancestors: dict[str, set[str]] = {}
    for step_id in order:
        step = steps[step_id]
        ancestors[step_id] = set(step.depends_on).union(*(ancestors[d] for d in step.depends_on))
        _check_input(step, task_types[step.type], steps, ancestors[step_id])
    return order


def _topological(steps: list[NewStep]) -> list[str]:
    waiting = {step.id: set(step.depends_on) for step in steps}
    order: list[str] = []
    ready = [step.id for step in steps if not step.depends_on]
    while ready:
        step_id = ready.pop(0)
        order.append(step_id)
        for other in [s.id for s in steps]:
            needs = waiting[other]
            if step_id in needs:
                needs.discard(step_id)
                if not needs:
                    ready.append(other)
    if len(order) < len(steps):
        stuck = next(step.id for step in steps if step.id not in order)
        raise _refuse(
            stuck, "its dependencies form a cycle (it waits on itself)", "cyclic_workflow"
        )
    return order


def _check_input(
    step: NewStep, task_type: TaskType, steps: Mapping[str, NewStep], ancestors: set[str]
) -> None:
    try:
        references = list(find_references(step.input))
    except BrokenReference as exc:
        raise _refuse(step.id, str(exc), "invalid_reference") from None
    for reference in references:
        if reference.step not in steps:
            raise _refuse(
                step.id, f"reference {reference.text!r} names no step", "invalid_reference"
            )
        if reference.step not in ancestors:
            raise _refuse(
                step.id,
                f"reference {reference.text!r} names step {reference.step!r}, which is not "
                "among its dependencies (add it to depends_on)",
                "invalid_reference",
            )
    if references:
        return
    try:
        task_type.parse_input(step.input)
    except InvalidTaskInput as exc:
        raise _refuse(
            step.id, f"invalid input for task type {step.type!r}: {exc}", "invalid_input"
        ) from None
