"""Finding, choosing, ordering and loading Python plugins (entry-point group ``noa.plugins``).

Order is deterministic: ``[plugins] order`` first, then the rest by name, then adjusted
so each plugin's declared ``requires``/``after`` come before it and ``before`` after it.
The order the environment lists distributions in never matters.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from noa.kernel.config import PluginsSettings
from noa.plugin_sdk.errors import PluginLoadError
from noa.plugin_sdk.types import PluginInfo, PluginRecord

__all__ = ["GROUP", "Candidate", "LoadedPlugin", "PluginSet", "discover", "order_plugins"]

GROUP = "noa.plugins"


class Candidate:
    """A plugin known by name: an installed entry point or an object given directly."""

    __slots__ = ("distribution", "entry_point", "name", "obj", "version")

    def __init__(
        self,
        name: str,
        *,
        entry_point: EntryPoint | None = None,
        obj: object | None = None,
        distribution: str = "",
        version: str = "",
    ) -> None:
        self.name = name
        self.entry_point = entry_point
        self.obj = obj
        self.distribution = distribution
        self.version = version

    @property
    def target(self) -> str:
        if self.entry_point is not None:
            return self.entry_point.value
        return f"<object {type(self.obj).__name__}>"

    def load(self) -> object:
        if self.obj is not None:
            return self.obj
        assert self.entry_point is not None
        return self.entry_point.load()


class LoadedPlugin:
    __slots__ = ("candidate", "info", "obj")

    def __init__(self, candidate: Candidate, obj: object, info: PluginInfo) -> None:
        self.candidate = candidate
        self.obj = obj
        self.info = info

    @property
    def name(self) -> str:
        return self.candidate.name


def discover(extra: Mapping[str, object] | None = None) -> dict[str, Candidate]:
    """Installed plugins by name, plus ``extra`` objects (tests, embedding).

    Two distributions offering the same plugin name is an error naming both.
    """
    found: dict[str, Candidate] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        candidate = Candidate(
            ep.name,
            entry_point=ep,
            distribution=dist.metadata["Name"] if dist is not None else "",
            version=dist.version if dist is not None else "",
        )
        other = found.get(ep.name)
        if other is not None and other.target != candidate.target:
            raise PluginLoadError(
                ep.name,
                f"offered by two distributions, {other.distribution} ({other.target}) and "
                f"{candidate.distribution} ({candidate.target}); uninstall one",
            )
        found[ep.name] = candidate
    for name, obj in (extra or {}).items():
        found[name] = Candidate(name, obj=obj, distribution="<in-process>")
    return found


def order_plugins(
    names: Iterable[str], preferred: Iterable[str], infos: Mapping[str, PluginInfo]
) -> list[str]:
    """Topological order of ``names`` honouring declared constraints, ties broken by
    ``preferred`` then by name. A cycle is an error naming the plugins in it."""
    chosen = list(dict.fromkeys(names))
    rank: dict[str, tuple[int, str]] = {}
    pref = [p for p in preferred if p in chosen]
    for name in chosen:
        rank[name] = (pref.index(name), name) if name in pref else (len(pref), name)
    edges: dict[str, set[str]] = {n: set() for n in chosen}  # n -> must come after these
    for name in chosen:
        info = infos[name]
        for dep in (*info.requires, *info.after):
            if dep in edges and dep != name:
                edges[name].add(dep)
        for later in info.before:
            if later in edges and later != name:
                edges[later].add(name)
    waiting = {n: set(deps) for n, deps in edges.items()}
    ready = [(rank[n], n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        result.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, (rank[other], other))
    if len(result) != len(chosen):
        stuck = sorted(set(chosen) - set(result))
        raise PluginLoadError(stuck[0], f"plugin order has a cycle among {', '.join(stuck)}")
    return result


class PluginSet:
    """The plugins of one process: what was discovered, chosen, loaded, and what failed."""

    def __init__(self, pm: pluggy.PluginManager, settings: PluginsSettings) -> None:
        self._pm = pm
        self._settings = settings
        self.candidates: dict[str, Candidate] = {}
        self.loaded: list[LoadedPlugin] = []  # in plugin order
        self.errors: dict[str, str] = {}
        self.started: set[str] = set()
        self._given: frozenset[str] = frozenset()

    def is_enabled(self, name: str) -> bool:
        s = self._settings
        if name in s.disable:
            return False
        return s.autoload or name in s.enable or name in self._given

    def is_optional(self, name: str) -> bool:
        return name in self._settings.optional

    def load(self, extra: Mapping[str, object] | None = None) -> None:
        """Import every enabled plugin and register it with pluggy, in plugin order.

        A failure of a non-optional plugin raises :class:`PluginLoadError`; an optional
        one is recorded in :attr:`errors` and skipped.
        """
        self.candidates = discover(extra)
        # Plugin objects handed over in-process were asked for explicitly: enabled.
        self._given = frozenset(extra or ())
        for name in self._settings.enable:
            if name not in self.candidates and name not in self._settings.disable:
                self._fail(
                    name,
                    "enabled in config but not installed (pip install noa-plugin-"
                    f"{name.replace('_', '-')}?)",
                )
        objects: dict[str, object] = {}
        infos: dict[str, PluginInfo] = {}
        for name in sorted(self.candidates):
            if not self.is_enabled(name):
                continue
            candidate = self.candidates[name]
            try:
                obj = candidate.load()
            except Exception as exc:
                self._fail(name, f"cannot import {candidate.target}: {type(exc).__name__}: {exc}")
                continue
            info = getattr(obj, "PLUGIN_INFO", None) or PluginInfo()
            if not isinstance(info, PluginInfo):
                self._fail(name, "PLUGIN_INFO must be a noa.plugin_sdk.PluginInfo")
                continue
            objects[name] = obj
            infos[name] = info
        for name in list(objects):
            missing = [r for r in infos[name].requires if r not in objects]
            if missing:
                del objects[name]
                self._fail(name, f"requires plugin(s) {', '.join(missing)}, which are not enabled")
        ordered = order_plugins(objects, self._settings.order, infos)
        # pluggy calls the last registered implementation first: register in reverse so
        # hook calls (and firstresult) follow plugin order.
        for name in reversed(ordered):
            self._register(name, objects[name])
        self.loaded = [
            LoadedPlugin(self.candidates[n], objects[n], infos[n])
            for n in ordered
            if self._pm.is_registered(objects[n])
        ]

    def _register(self, name: str, obj: object) -> None:
        try:
            self._pm.register(obj, name=name)
        except Exception as exc:
            self._fail(name, f"cannot register hooks: {exc}")
            return
        unknown = sorted(c.name for c in self._pm.get_hookcallers(obj) or () if not c.has_spec())
        if unknown:
            self._pm.unregister(obj)
            self._fail(name, f"implements unknown hook(s) {', '.join(unknown)} (misspelt?)")

    def _fail(self, name: str, message: str) -> None:
        if not self.is_optional(name):
            raise PluginLoadError(name, message)
        self.errors[name] = message

    def hooks_of(self, name: str) -> tuple[str, ...]:
        plugin = self._pm.get_plugin(name)
        if plugin is None:
            return ()
        return tuple(sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or ()))

    def records(self) -> list[PluginRecord]:
        """Loaded plugins in plugin order, then the rest by name."""
        loaded = [p.name for p in self.loaded]
        rest = sorted(set(self.candidates) - set(loaded))
        rows: list[PluginRecord] = []
        for name in [*loaded, *rest]:
            c = self.candidates.get(name)
            error = self.errors.get(name)
            enabled = self.is_enabled(name)
            state: Any
            if error is not None:
                state = "failed"
            elif not enabled:
                state = "disabled"
            elif name in self.started:
                state = "started"
            else:
                state = "loaded"
            info = next((p.info for p in self.loaded if p.name == name), None)
            rows.append(
                PluginRecord(
                    name=name,
                    version=c.version if c else "",
                    distribution=c.distribution if c else "",
                    entry_point=c.target if c else "",
                    enabled=enabled,
                    optional=self.is_optional(name),
                    state=state,
                    hooks=self.hooks_of(name),
                    description=info.description if info else "",
                    error=error,
                )
            )
        return rows
