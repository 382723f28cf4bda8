"""Cluster configuration and the module lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.lifecycle import Module, ModuleSet, Service, State, resolve_order
from lucid_sessions.errors import InvalidConfigError, PipelineError


def test_defaults_are_the_seed_ports_and_all_in_one():
    config = load_config(env={})
    assert config.ports == {
        "pipeline": 8083,
        "recorder": 8084,
        "processor": 8085,
        "storage": 8086,
        "api": 8087,
    }
    assert config.all_in_one


def test_toml_then_environment_then_command_line(tmp_path):
    file = tmp_path / "lucid.toml"
    file.write_text('targets = ["storage"]\n[storage]\nport = 9086\n[pipeline]\nqueue_size = 4\n')
    config = load_config(file=file, env={"LUCID_STORAGE_PORT": "9999"})
    assert config.targets == ("storage",) and config.ports["storage"] == 9999
    assert config.queue_size == 4
    config = load_config(file=file, env={}, targets="api,pipeline")
    assert config.local == {"api", "pipeline"}


def test_every_configuration_error_is_reported_at_once(tmp_path):
    env = {
        "LUCID_STORAGE_PORT": "seventy",
        "LUCID_QUEUE_SIZE": "0",
        "LUCID_TARGETS": "storage,bogus",
        "LUCID_PIPELINE_ADDRESS": "nohostport",
    }
    with pytest.raises(InvalidConfigError) as info:
        load_config(env=env)
    message = info.value.message
    for needle in (
        "storage port must be an integer",
        "queue size must be between",
        "unknown target 'bogus'",
        "pipeline address must be host:port",
    ):
        assert needle in message
    assert len(info.value.details["errors"]) == 4


def test_a_config_file_that_is_not_toml_is_named(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text("[[[")
    with pytest.raises(InvalidConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(file=file, env={})


def test_modules_start_in_dependency_order_and_stop_in_reverse():
    events: list[str] = []

    def module(name: str, *deps: str) -> Module:
        async def init() -> Service:
            events.append(f"start {name}")

            async def stop() -> None:
                events.append(f"stop {name}")

            return Service(name, name, stop)

        return Module(name, init, deps)

    modules = ModuleSet(
        {
            m.name: m
            for m in [
                module("api", "pipeline", "storage"),
                module("pipeline", "storage"),
                module("storage"),
            ]
        }
    )
    asyncio.run(modules.start(["api"]))
    assert modules.states() == {"storage": "running", "pipeline": "running", "api": "running"}
    asyncio.run(modules.stop())
    assert events == [
        "start storage",
        "start pipeline",
        "start api",
        "stop api",
        "stop pipeline",
        "stop storage",
    ]
    assert set(modules.states().values()) == {"terminated"}


def test_a_failing_module_stops_the_ones_already_started_and_names_itself():
    stopped: list[str] = []

    async def good() -> Service:
        async def stop() -> None:
            stopped.append("storage")

        return Service("storage", None, stop)

    async def bad() -> Service:
        raise InvalidConfigError("port 8085 is in use")

    modules = ModuleSet(
        {"storage": Module("storage", good), "processor": Module("processor", bad, ("storage",))}
    )
    with pytest.raises(PipelineError, match="module processor failed to start: port 8085"):
        asyncio.run(modules.start(["processor"]))
    assert stopped == ["storage"]
    assert modules.services["processor"].state is State.FAILED


def test_cycles_and_unknown_modules_are_refused():
    with pytest.raises(InvalidConfigError, match="cycle: a -> b -> a"):
        resolve_order({"a": ["b"], "b": ["a"]}, ["a"])
    with pytest.raises(InvalidConfigError, match="unknown module 'c'"):
        resolve_order({"a": ["c"]}, ["a"])
