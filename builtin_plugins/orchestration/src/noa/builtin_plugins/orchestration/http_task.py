"""The ``http_request`` task type: one outbound HTTP request, to allowed hosts only.

Input ``{"url", "method"?, "headers"?, "body"? | "json"?, "timeout_s"?}``; output
``{"status", "headers", "body" | "body_base64", "json"?, "truncated"}``. Any answered
status is an output, except 5xx and 429, which are retried like connection errors and
timeouts. A host not in ``orchestration.http_allowed_hosts`` (empty by default: none)
fails the task at once, naming the host. Redirects are not followed (a redirect could
lead off the allow-list): a 3xx is the output, with its ``location`` header.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from noa.builtin_plugins.orchestration.config import OrchestrationConfig
from noa.plugin_sdk.tasks import TaskContext, TaskFailed, TaskType

__all__ = ["HttpRequest", "host_allowed", "http_request_type"]

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    method: Method = "GET"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # A text body, or ``json`` (sent as JSON with its content type); not both.
    body: str | None = None
    json: Any = msgspec.UNSET
    # Capped by orchestration.http_max_timeout_s.
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """``host`` is named in ``allowed``, or is a subdomain of a ``*.domain`` entry."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _checked(raw: dict[str, Any]) -> HttpRequest:
    try:
        request = msgspec.convert(raw, HttpRequest)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an http:// or https:// URL with a host, not {request.url!r}")
    if request.body is not None and request.json is not msgspec.UNSET:
        raise ValueError("give body or json, not both")
    return request


def http_request_type(config: OrchestrationConfig) -> TaskType:
    allowed = config.http_allowed_hosts
    max_timeout_s, max_bytes = config.http_max_timeout_s, config.http_max_response_bytes

    async def http_request(ctx: TaskContext, request: HttpRequest) -> dict[str, Any]:
        import httpx

        host = urlsplit(request.url).hostname or ""
        if not host_allowed(host, allowed):
            raise TaskFailed(
                f"host {host!r} is not allowed: add it to orchestration.http_allowed_hosts",
                code="host_not_allowed",
                retry=False,
            )
        content: bytes | None = None
        headers = dict(request.headers)
        if request.json is not msgspec.UNSET:
            content = msgspec.json.encode(request.json)
            headers.setdefault("content-type", "application/json")
        elif request.body is not None:
            content = request.body.encode()
        timeout = min(request.timeout_s, max_timeout_s)
        client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        try:
            sent = client.stream(request.method, request.url, headers=headers, content=content)
            async with client, sent as reply:
                data = bytearray()
                truncated = False
                async for chunk in reply.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        del data[max_bytes:]
                        truncated = True
                        break
        except httpx.TimeoutException:
            raise TaskFailed(
                f"{request.method} {host}: no answer within {timeout:g} s", code="http_timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise TaskFailed(
                f"{request.method} {host}: {type(exc).__name__}: {exc}", code="http_unreachable"
            ) from None
        if reply.status_code >= 500 or reply.status_code == 429:
            raise TaskFailed(
                f"{request.method} {host} answered {reply.status_code}", code="http_status"
            )
        output: dict[str, Any] = {
            "status": reply.status_code,
            "headers": {k: ", ".join(reply.headers.get_list(k)) for k in reply.headers},
            "truncated": truncated,
        }
        try:
            output["body"] = bytes(data).decode()
        except UnicodeDecodeError:
            output["body_base64"] = base64.b64encode(data).decode()
        if not truncated and "json" in reply.headers.get("content-type", ""):
            with contextlib.suppress(msgspec.DecodeError):
                output["json"] = msgspec.json.decode(bytes(data))
        return output

    return TaskType(
        http_request,
        validate=_checked,
        timeout_s=max_timeout_s + 5.0,
        max_retries=3,
        description="an outbound HTTP request to an allowed host",
    )
