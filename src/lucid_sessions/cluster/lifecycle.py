"""Modules, their dependency graph, and the lifecycle every service goes through.

A module is a named unit with an async ``init`` that builds its service and the names of
the modules it depends on. The graph is plain data, checked for unknown names and
cycles; modules start in dependency order and stop in reverse. Every service moves
``new -> starting -> running -> stopping -> terminated``, or to ``failed`` with its error;
a failed module stops the whole set with that error (dskit's ``services`` model).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lucid_sessions.errors import InvalidConfigError, PipelineError

__all__ = ["Module", "ModuleSet", "Service", "State", "resolve_order"]

log = logging.getLogger(__name__)


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    FAILED = "failed"


@dataclass(slots=True)
class Service:
    """A started module: what it exposes and how to stop it."""

    name: str
    value: object = None
    """The component object (local) the module provides, if any."""
    stop: Callable[[], Awaitable[None]] | None = None
    state: State = State.NEW
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    init: Callable[[], Awaitable[Service]]
    deps: tuple[str, ...] = ()


def resolve_order(graph: Mapping[str, Iterable[str]], targets: Iterable[str]) -> list[str]:
    """The targets and everything they depend on, dependencies first.

    Raises InvalidConfigError for an unknown module name or a dependency cycle.
    """
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in graph:
            raise InvalidConfigError(f"unknown module {name!r}")
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise InvalidConfigError(f"module dependency cycle: {cycle}")
        visiting.append(name)
        for dep in graph[name]:
            visit(dep)
        visiting.pop()
        order.append(name)

    for target in targets:
        visit(target)
    return order


@dataclass(slots=True)
class ModuleSet:
    """Starts modules in dependency order, stops them in reverse."""

    modules: dict[str, Module]
    services: dict[str, Service] = field(default_factory=dict)

    def order(self, targets: Iterable[str]) -> list[str]:
        return resolve_order({n: m.deps for n, m in self.modules.items()}, targets)

    async def start(self, targets: Iterable[str]) -> None:
        """Start every needed module; on any failure stop what started and raise."""
        for name in self.order(targets):
            service = Service(name, state=State.STARTING)
            self.services[name] = service
            try:
                started = await self.modules[name].init()
            except Exception as exc:
                service.state = State.FAILED
                service.error = getattr(exc, "message", None) or str(exc)
                await self.stop()
                raise PipelineError(f"module {name} failed to start: {service.error}") from exc
            started.state = State.RUNNING
            self.services[name] = started
            log.info("module started", extra={"module": name})

    async def stop(self) -> None:
        for name in reversed(list(self.services)):
            service = self.services[name]
            if service.state not in (State.RUNNING, State.STARTING) or service.stop is None:
                if service.state == State.RUNNING:
                    service.state = State.TERMINATED
                continue
            service.state = State.STOPPING
            try:
                await asyncio.shield(service.stop())
                service.state = State.TERMINATED
            except Exception as exc:
                service.state = State.FAILED
                service.error = str(exc)
                log.error("module %s failed to stop: %s", name, exc)

    def states(self) -> dict[str, str]:
        return {name: s.state.value for name, s in self.services.items()}
