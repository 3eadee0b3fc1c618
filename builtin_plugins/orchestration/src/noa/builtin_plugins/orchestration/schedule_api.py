"""The cron schedule API: ``/v1/schedules``.

Scopes as tasks: ``tasks:submit`` to create, ``tasks:read`` to read and list,
``tasks:admin`` to pause, resume and delete.
"""

from __future__ import annotations

from typing import Annotated

from litestar import delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody, QueryParameter
from noa.builtin_plugins.orchestration.api import ADMIN, READ, SUBMIT
from noa.builtin_plugins.orchestration.schedules import MAX_LIST, Schedules
from noa.builtin_plugins.orchestration.values import NewSchedule, ScheduleList, ScheduleView
from noa.plugin_sdk.auth import SCOPE_OPT

__all__ = ["schedule_handlers"]

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIST)]
# Room for the request's other fields around an input of max_input_bytes.
_ENVELOPE_BYTES = 16 * 1024


def schedule_handlers(schedules: Schedules) -> list[HTTPRouteHandler]:
    tags = ["schedules"]

    @post(
        "/v1/schedules",
        summary="Create a cron schedule",
        tags=tags,
        status_code=201,
        opt={SCOPE_OPT: SUBMIT},
        request_max_body_size=schedules.tasks.config.max_input_bytes + _ENVELOPE_BYTES,
    )
    async def create(data: JSONBody[NewSchedule]) -> ScheduleView:
        """Queue a task of ``type`` with ``input`` at every time ``cron`` names (five
        fields, e.g. ``"0 3 * * *"``: daily at 03:00) in ``timezone`` (IANA, default UTC).
        Each fire is an ordinary task (retries, dead letters, events), with the
        idempotency key ``schedule:<id>:<fire epoch>``. 422 for an invalid cron
        expression or zone, an unknown type or an input its type refuses."""
        return await schedules.create(data)

    @get("/v1/schedules", summary="List cron schedules", tags=tags, opt={SCOPE_OPT: READ})
    async def list_schedules(limit: Limit = 100) -> ScheduleList:
        """The newest first."""
        return ScheduleList(schedules=await schedules.find(limit))

    @get(
        "/v1/schedules/{schedule_id:str}",
        summary="Show a cron schedule",
        tags=tags,
        opt={SCOPE_OPT: READ},
    )
    async def show(schedule_id: FromPath[str]) -> ScheduleView:
        """With its next fire time and the task its last fire made."""
        return await schedules.get(schedule_id)

    @post(
        "/v1/schedules/{schedule_id:str}/pause",
        summary="Pause a cron schedule",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def pause(schedule_id: FromPath[str]) -> ScheduleView:
        return await schedules.pause(schedule_id, True)

    @post(
        "/v1/schedules/{schedule_id:str}/resume",
        summary="Resume a cron schedule",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def resume(schedule_id: FromPath[str]) -> ScheduleView:
        """It fires next at its first time after now (not for the times it missed)."""
        return await schedules.pause(schedule_id, False)

    @delete(
        "/v1/schedules/{schedule_id:str}",
        summary="Delete a cron schedule",
        tags=tags,
        status_code=200,
        opt={SCOPE_OPT: ADMIN},
    )
    async def remove(schedule_id: FromPath[str]) -> ScheduleView:
        """The schedule as it was; the tasks it made stay."""
        return await schedules.delete(schedule_id)

    return [create, list_schedules, show, pause, resume, remove]
