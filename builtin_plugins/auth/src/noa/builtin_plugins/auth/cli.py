"""``noa keys`` (create, list, show, revoke API keys) and ``noa tokens mint``.

They act on the configured database directly, like ``noa migrate``: no server needs to
run. Each change is recorded as an audit event with actor ``cli``: through the broker
when it is NATS (the servers' audit consumers store it), else written to the audit
table here (an in-process broker has no consumer in this process).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from noa.builtin_plugins.auth.apikeys import ID_PATTERN, ApiKeyRecord, ApiKeyStore
from noa.builtin_plugins.auth.capability import check_keys, mint, verify
from noa.builtin_plugins.auth.config import AuthConfig
from noa.plugin_sdk import Host, PluginConfig
from noa.plugin_sdk.audit import AuditEvent, record, store
from noa.plugin_sdk.auth import RateLimit
from noa.plugin_sdk.errors import ApiError, NoaError
from noa.plugin_sdk.ports.broker import BROKER_STATE_KEY
from noa.plugin_sdk.ports.storage import STORAGE_STATE_KEY
from noa.plugin_sdk.slot_driver import close_driver, start_driver

__all__ = ["keys", "parse_duration", "parse_rate", "tokens"]

T = TypeVar("T")
ACTOR = "cli"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(?:/([smhd]))?")


def _fail(message: str) -> NoReturn:
    click.echo(f"noa: error: {message}", err=True)
    sys.exit(1)


def parse_duration(text: str) -> int:
    """Seconds in ``3600``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration: write 3600, 90s, 15m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_rate(text: str) -> float:
    """Calls a second in ``10``, ``10/s``, ``600/m``, ``100/h`` or ``1000/d``."""
    match = _RATE.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate: write 10/s, 600/m, 100/h or 1000/d")
    return float(match.group(1)) / _UNITS[match.group(2) or "s"]


def _option_value(parse: Callable[[str], T], text: str | None, option: str) -> T | None:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _section(host: Host, name: str) -> PluginConfig:
    try:
        return host.section(name, PluginConfig)
    except KeyError:
        _fail(f"this command needs the {name!r} plugin: enable it (plugins.enable)")


async def _start_broker(host: Host) -> None:
    # An in-process broker has no audit consumer in this process: _audit stores directly.
    try:
        driver = host.config_value("drivers.broker")
        config = host.section("broker", PluginConfig)
    except KeyError:
        return
    if driver != "inprocess":
        await start_driver(
            host,
            "broker",
            BROKER_STATE_KEY,
            build=lambda cls: cls.from_config(config),
            url_key="broker.nats_url",
        )


def _run(
    state: Any,
    work: Callable[[Host], Awaitable[T]],
    *,
    storage: bool = True,
    audited: bool = False,
) -> T:
    """Run ``work`` with the configured storage (and broker when it is ``audited``);
    every failure is one ``noa: error:`` line and exit 1."""
    host: Host = state.host()
    storage_config = _section(host, "storage") if storage else None

    async def main() -> T:
        try:
            if storage_config is not None:
                await start_driver(
                    host,
                    "storage",
                    STORAGE_STATE_KEY,
                    build=lambda cls: cls.from_config(storage_config, host.server.data_dir),
                    url_key="storage.postgres_url",
                )
            if audited:
                await _start_broker(host)
            return await work(host)
        finally:
            await close_driver(host, BROKER_STATE_KEY)
            await close_driver(host, STORAGE_STATE_KEY)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        _fail(exc.message)
    except NoaError:
        raise  # the kernel's own one line and exit code (2 for a config error)
    except Exception as exc:  # the database's own errors: one line, no traceback
        text = str(exc)
        hint = (
            "; run `noa migrate apply` first"
            if "noa_auth_api_key" in text or "no such table" in text
            else ""
        )
        _fail(f"{type(exc).__name__}: {text}{hint}")


def _store(host: Host) -> ApiKeyStore:
    return ApiKeyStore(host.state[STORAGE_STATE_KEY])


async def _audit(host: Host, action: str, resource: str, **detail: Any) -> None:
    event = AuditEvent(actor=ACTOR, action=action, resource=resource, detail=detail)
    if BROKER_STATE_KEY in host.state:
        await record(host.state, event)
        return
    # The in-process broker has no audit consumer in this process: write the row here.
    try:
        await store(host.state[STORAGE_STATE_KEY], event)
    except Exception as exc:  # the audit table is missing: the change itself stands
        click.echo(f"noa: warning: audit event not stored ({type(exc).__name__}: {exc})", err=True)


def _show(record_: ApiKeyRecord) -> None:
    rate = record_.rate_limit
    lines = [
        ("id", record_.id),
        ("name", record_.name),
        ("status", record_.status()),
        ("scopes", " ".join(record_.scopes)),
        ("created", f"{_when(record_.created_at)} by {record_.created_by or '-'}"),
        ("expires", _when(record_.expires_at)),
        ("revoked", _when(record_.revoked_at)),
        ("rate", "-" if rate is None else f"{rate.per_s:g}/s, burst {rate.burst}"),
        ("quota/day", "-" if record_.quota_per_day is None else str(record_.quota_per_day)),
    ]
    for label, value in lines:
        click.echo(f"{label + ':':<11}{value}")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), indent=2))


@click.group("keys")
def keys() -> None:
    """API keys (noa_sk_...): scoped credentials for programs; only their hash is stored."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="A scope the key grants (inference:invoke, auth:*, *). Repeatable.",
)
@click.option("--expires-in", help="Lifetime: 3600, 90s, 15m, 12h, 30d, 2w [default: never].")
@click.option("--rate", help="The key's own rate limit: 10/s, 600/m, 100/h.")
@click.option("--burst", type=click.IntRange(min=1), help="Calls allowed at once (with --rate).")
@click.option("--quota-per-day", type=click.IntRange(min=1), help="Calls allowed a day.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the key included).")
@click.pass_obj
def create(
    state: Any,
    name: str,
    scopes: tuple[str, ...],
    expires_in: str | None,
    rate: str | None,
    burst: int | None,
    quota_per_day: int | None,
    as_json: bool,
) -> None:
    """Create an API key NAME; the key is printed once and cannot be shown again."""
    lifetime = _option_value(parse_duration, expires_in, "--expires-in")
    per_s = _option_value(parse_rate, rate, "--rate")
    if burst is not None and per_s is None:
        raise click.BadParameter("--burst needs --rate", param_hint="--burst")
    limit = (
        None
        if per_s is None
        else RateLimit(per_s=per_s, burst=burst if burst is not None else max(1, math.ceil(per_s)))
    )

    async def work(host: Host) -> Any:
        created = await _store(host).create(
            name,
            scopes,
            expires_at=None if lifetime is None else time.time() + lifetime,
            rate_limit=limit,
            quota_per_day=quota_per_day,
            created_by=ACTOR,
        )
        await _audit(
            host,
            "auth.key.create",
            f"api_key:{created.id}",
            name=created.name,
            scopes=list(created.scopes),
            expires_at=created.expires_at,
        )
        return created

    created = _run(state, work, audited=True)
    note = "Store this key now: it is not shown again (the server keeps only its hash)."
    if as_json:
        _echo_json(created)
        click.echo(note, err=True)
        return
    _show(created)
    click.echo(f"\nkey: {created.key}\n")
    click.echo(note)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_keys(state: Any, as_json: bool) -> None:
    """Every API key with its status (active, expired, revoked); never a key."""
    records = _run(state, lambda host: _store(host).list())
    if as_json:
        _echo_json(records)
        return
    if not records:
        click.echo("no API keys; create one with `noa keys create NAME --scope SCOPE`")
        return
    click.echo(f"{'ID':<13} {'STATUS':<8} {'EXPIRES':<21} {'NAME':<24} SCOPES")
    for item in records:
        click.echo(
            f"{item.id:<13} {item.status():<8} {_when(item.expires_at):<21} "
            f"{item.name:<24} {' '.join(item.scopes)}"
        )


def _find(state: Any, key_id: str) -> ApiKeyRecord:
    found = (
        _run(state, lambda host: _store(host).get(key_id)) if ID_PATTERN.fullmatch(key_id) else None
    )
    if found is None:
        _fail(f"no API key {key_id!r} (see `noa keys list`)")
    return found


@keys.command("show")
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(state: Any, key_id: str, as_json: bool) -> None:
    """One API key's record (never the key)."""
    found = _find(state, key_id)
    if as_json:
        _echo_json(found)
    else:
        _show(found)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.pass_obj
def revoke(state: Any, key_id: str) -> None:
    """Revoke an API key: servers refuse it within auth.api_key_cache_s."""
    before = _find(state, key_id)
    if before.revoked_at is not None:
        click.echo(f"API key {key_id} was already revoked at {_when(before.revoked_at)}")
        return

    async def work(host: Host) -> None:
        await _store(host).revoke(key_id)
        await _audit(host, "auth.key.revoke", f"api_key:{key_id}", name=before.name)

    _run(state, work, audited=True)
    click.echo(f"revoked API key {key_id} ({before.name})")


@click.group("tokens")
def tokens() -> None:
    """Capability tokens (noacap1...): signed, short-lived rights on one resource."""


@tokens.command("mint")
@click.option("--resource", required=True, help='The one resource: "model:NAME", "plugin:NAME".')
@click.option(
    "--action",
    "actions",
    multiple=True,
    required=True,
    help="A scope the token grants on it (inference:invoke). Repeatable.",
)
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 600, 15m, 1h, 1d.")
@click.option("--subject", help="Who the token is for (recorded in it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def mint_token(
    state: Any,
    resource: str,
    actions: tuple[str, ...],
    ttl: str,
    subject: str | None,
    as_json: bool,
) -> None:
    """Mint a capability token with the first of auth.capability_keys; prints the token."""
    ttl_s = _option_value(parse_duration, ttl, "--ttl")
    assert ttl_s is not None
    config = state.host().section("auth", AuthConfig)
    try:
        check_keys(config.capability_keys)
    except ValueError as exc:
        _fail(f"auth.capability_keys: {exc}")

    async def work(host: Host) -> Any:
        now = time.time()
        token = mint(
            config.capability_keys,
            resource,
            actions,
            ttl_s,
            max_ttl_s=config.capability_max_ttl_s,
            subject=subject,
            now=now,
        )
        claims = verify(
            config.capability_keys, token, max_ttl_s=config.capability_max_ttl_s, now=now
        )
        await _audit(
            host,
            "auth.capability.mint",
            claims.res,
            jti=claims.jti,
            actions=claims.act,
            ttl_s=ttl_s,
            subject=claims.sub,
        )
        return token, claims

    token, claims = _run(state, work, storage=False, audited=True)
    if as_json:
        _echo_json(
            {
                "token": token,
                "jti": claims.jti,
                "resource": claims.res,
                "actions": claims.act,
                "expires_at": claims.exp,
            }
        )
        return
    click.echo(token)
    click.echo(f"expires {_when(claims.exp)} (jti {claims.jti})", err=True)
