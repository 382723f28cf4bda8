"""The one place that decides, per dependency, "local object or gRPC client".

:class:`Cluster` builds the modules this process runs (``config.local``) in dependency
order. A component that needs another gets :meth:`Cluster.dependency`: the local object
when that component runs here, else a gRPC client to its configured address. Components
never learn which they got. In per-component mode every internal component this process
runs also serves gRPC (with the standard health service) on its port; in all-in-one mode
only the API port listens.

Module graph (plain data, checked for cycles)::

    keys       master key, cluster signing key (from the data directory or key files)
    storage    -> keys          (StorageService over the data directory)
    processor  -> keys          (ProcessorService)
    pipeline   -> keys, [storage], [processor]   recorder attached once it exists
    recorder   -> [pipeline]
    api        -> keys, [pipeline], [storage], [recorder]

A bracketed dependency is a module only when that component runs locally.

TLS (:mod:`.tls`): the gRPC credentials are built once from the configured files and
given to every gRPC server and client this process makes (so the clients' health checks
go over TLS too); the API serves HTTPS when it has a certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from lucid_sessions.anchoring.select import anchor_for
from lucid_sessions.anchoring.settings import describe as describe_anchor
from lucid_sessions.api.context import ApiSettings, ServiceHealth
from lucid_sessions.cluster.config import INTERNAL, ClusterConfig
from lucid_sessions.cluster.interfaces import Pipeline, Processor, Recorder, Storage
from lucid_sessions.cluster.lifecycle import Module, ModuleSet, Service
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.cluster.tls import grpc_tls, uvicorn_options
from lucid_sessions.crypto import ClusterKey, MasterKey
from lucid_sessions.observability import Metrics
from lucid_sessions.storage.datadir import DataDir

__all__ = ["Cluster", "Keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Keys:
    datadir: DataDir
    master: MasterKey
    signer: ClusterKey


class Cluster:
    """The components of one process. ``await start()``, then ``await stop()``."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._clients: dict[str, Any] = {}
        self._servers: list[Any] = []
        self.modules = ModuleSet(self._graph())
        self.api_server: Any = None
        self.api_port: int | None = None
        self.grpc_ports: dict[str, int] = {}
        self.metrics = Metrics(reserve_bytes=config.storage_reserve_bytes)

    # the graph

    def _graph(self) -> dict[str, Module]:
        local = self.config.local

        def deps(*names: str) -> tuple[str, ...]:
            return tuple(n for n in names if n == "keys" or n in local)

        return {
            "keys": Module("keys", self._init_keys),
            "storage": Module("storage", self._init_storage, deps("keys")),
            "processor": Module("processor", self._init_processor, deps("keys", "storage")),
            "pipeline": Module(
                "pipeline", self._init_pipeline, deps("keys", "storage", "processor")
            ),
            "recorder": Module("recorder", self._init_recorder, deps("pipeline")),
            "api": Module("api", self._init_api, deps("keys", "pipeline", "storage", "recorder")),
        }

    def dependency(self, name: str) -> Any:
        """The component ``name`` as this process should use it: local or a gRPC client."""
        if name in self.config.local:
            return self.modules.services[name].value
        client = self._clients.get(name)
        if client is None:
            from lucid_sessions import rpc

            factory = {
                "storage": rpc.StorageClient,
                "processor": rpc.ProcessorClient,
                "pipeline": rpc.PipelineClient,
                "recorder": rpc.RecorderClient,
            }[name]
            client = self._clients[name] = factory(self.config.address(name), **self._rpc_tls[1])
        return client

    @functools.cached_property
    def _rpc_tls(self) -> tuple[Any, dict[str, Any]]:
        """(server credentials or None, client keyword arguments) for gRPC: built once
        from the TLS files and shared by every server and client; (None, {}) without TLS."""
        tls = grpc_tls(self.config.tls)
        if tls is None:
            return None, {}
        from lucid_sessions import rpc

        server = rpc.server_credentials(tls) if tls.certificate_chain else None
        client = {"credentials": rpc.channel_credentials(tls), "options": rpc.channel_options(tls)}
        return server, client

    async def _serve_grpc(self, name: str, value: object) -> None:
        if self.config.all_in_one or name not in INTERNAL:
            return
        from lucid_sessions import rpc

        server, port = await rpc.serve(
            {name: value},
            host=self.config.grpc_host,
            port=self.config.ports[name],
            server_credentials=self._rpc_tls[0],
        )
        self._servers.append(server)
        self.grpc_ports[name] = port
        log.info(
            "serving gRPC",
            extra={"component": name, "port": port, "tls": self._rpc_tls[0] is not None},
        )

    # module init functions

    async def _init_keys(self) -> Service:
        datadir = DataDir.open(
            self.config.data_dir, create=True, key_file=self.config.master_key_file
        )
        keys = Keys(datadir, datadir.master_key(), datadir.cluster_key())
        return Service("keys", keys, datadir.close)

    @property
    def keys(self) -> Keys:
        value = self.modules.services["keys"].value
        assert isinstance(value, Keys)
        return value

    async def _init_storage(self) -> Service:
        """Metadata in MongoDB when ``mongodb_uri`` is set (opened, pinged and indexed here,
        attached to the data directory, which closes it), else the data directory's SQLite
        store."""
        datadir = self.keys.datadir
        if self.config.mongodb_uri:
            from lucid_sessions.storage.mongo_store import MongoStore

            mongo = await MongoStore.open(
                self.config.mongodb_uri, database=self.config.mongodb_database
            )
            datadir.attach_store(mongo)
            log.info("metadata in MongoDB", extra={"mongodb": mongo.where})
        storage = StorageService(
            datadir,
            audit_signer=self.keys.signer,
            retention_days=self.config.retention_days,
            gc_interval_s=self.config.gc_interval_s,
        )
        await storage.health()
        storage.start_gc()  # retention and orphans, every gc_interval_s (0: off)
        await self._serve_grpc("storage", storage)
        return Service("storage", storage, storage.shutdown)  # signs the last audit head

    # Redis: pipeline coordination and the session cache (cluster/coordination.py)

    @property
    def coordinated(self) -> bool:
        """Chunks go through Redis streams: Redis is configured and the processor and the
        pipeline run in different processes."""
        local = self.config.local
        return bool(self.config.security.redis_url) and not {"pipeline", "processor"} <= local

    def _redis(self) -> Any:
        """This process's Redis client (made once, closed with the other clients)."""
        holder = self._clients.get("redis")
        if holder is None:
            from lucid_sessions.security.redis_conn import open_redis

            assert self.config.security.redis_url is not None
            client = open_redis(self.config.security.redis_url)
            holder = self._clients["redis"] = _RedisHolder(client)
        return holder.client

    def _cached(self, storage: Storage) -> Storage:
        """``storage`` with get_session read through Redis when Redis is configured."""
        if not self.config.security.redis_url:
            return storage
        from lucid_sessions.cluster.coordination import CachingStorage, SessionCache

        cache = SessionCache(self._redis(), prefix=self.config.security.redis_prefix)
        return cast(Storage, CachingStorage(storage, cache))

    async def _init_processor(self) -> Service:
        processor = ProcessorService(self.keys.master, workers=self.config.processor_threads)
        await self._serve_grpc("processor", processor)
        if not self.coordinated or "pipeline" in self.config.local:
            return Service("processor", processor, processor.close)
        from lucid_sessions.cluster.coordination import ChunkConsumer

        consumer = ChunkConsumer(
            self._redis(),
            self.dependency("storage"),
            processor,
            prefix=self.config.security.redis_prefix,
            claim_timeout_s=self.config.claim_timeout_s,
            workers=self.config.processor_threads,
        )
        await consumer.start()
        log.info("consuming chunks from Redis", extra={"consumer": consumer.name})

        async def stop() -> None:
            await consumer.close()
            await processor.close()

        return Service("processor", processor, stop)

    async def _init_pipeline(self) -> Service:
        keys = self.keys
        storage: Storage = self._cached(self.dependency("storage"))
        coordinator = None
        processor: Processor | None = None
        if self.coordinated:
            from lucid_sessions.cluster.coordination import ChunkCoordinator

            coordinator = ChunkCoordinator(
                self._redis(),
                storage,
                prefix=self.config.security.redis_prefix,
                claim_timeout_s=self.config.claim_timeout_s,
            )
        else:
            processor = self.dependency("processor")
        pipeline = PipelineManager(
            storage,
            processor,
            master=keys.master,
            signer=keys.signer,
            anchor=anchor_for(self.config.anchor, keys.datadir.path, keys.signer),
            anchor_attempts=self.config.anchor.max_attempts,
            anchor_backoff_s=self.config.anchor.backoff_s,
            anchor_max_backoff_s=self.config.anchor.max_backoff_s,
            queue_size=self.config.queue_size,
            workers=self.config.pipeline_workers,
            on_chunk=self.metrics.chunk_processed,
            on_storage_error=self.metrics.storage_write_error,
            storage_reserve_bytes=self.config.storage_reserve_bytes,
            coordinator=coordinator,
            evidence_dir=keys.datadir.path,
            checkpoint_chunks=self.config.checkpoint_chunks,
            checkpoint_seconds=self.config.checkpoint_seconds,
        )
        if "recorder" not in self.config.local:
            pipeline.attach_recorder(self.dependency("recorder"))
        log.info("anchoring roots", extra={"anchor": describe_anchor(self.config.anchor)})
        await pipeline.start()
        await self._serve_grpc("pipeline", pipeline)
        return Service("pipeline", pipeline, pipeline.close)

    async def _init_recorder(self) -> Service:
        pipeline: Pipeline = self.dependency("pipeline")
        recorder = RecorderService(pipeline)
        if isinstance(pipeline, PipelineManager):
            pipeline.attach_recorder(recorder)
        await self._serve_grpc("recorder", recorder)
        return Service("recorder", recorder, recorder.close)

    async def _init_api(self) -> Service:
        import uvicorn

        from lucid_sessions.api import create_app
        from lucid_sessions.api.limits import uvicorn_limits

        pipeline: Pipeline = self.dependency("pipeline")
        storage: Storage = self.dependency("storage")
        recorder: Recorder = self.dependency("recorder")
        from lucid_sessions.api.security import jwt_authorizer

        settings = ApiSettings(
            trusted_public_key=self.keys.signer.public_key_bytes(),
            evidence_dir=self.keys.datadir.path,
        )
        authorizer, close_authorizer = jwt_authorizer(
            self.config.security, data_dir=self.keys.datadir.path, store=storage
        )
        app = create_app(
            authorizer=authorizer,
            master_key=self.keys.master,
            pipeline=pipeline,
            storage=self._cached(storage),
            recorder=recorder,
            health_checks={name: self._health_check(name) for name in _ORDER},
            metrics=self.metrics,
            settings=settings,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.config.api_host,
                port=self.config.ports["api"],
                log_level="warning",
                lifespan="off",
                **uvicorn_options(self.config.tls),
                **uvicorn_limits(settings),
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.02)
        self.api_server = server
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.api_port = sockets[0].getsockname()[1] if sockets else self.config.ports["api"]

        async def stop() -> None:
            server.should_exit = True
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                await close_authorizer()

        return Service("api", app, stop)

    # running

    def _health_check(self, name: str) -> Callable[[], Awaitable[ServiceHealth]]:
        """A local module's lifecycle state, or a remote one's gRPC health status."""

        async def check() -> ServiceHealth:
            if name in self.config.local:
                service = self.modules.services.get(name)
                if service is None:
                    return ServiceHealth("starting")
                return ServiceHealth(service.state.value, service.error or "")
            serving = await self.dependency(name).serving()
            where = self.config.address(name)
            return ServiceHealth("running" if serving else "failed", f"gRPC {where}")

        return check

    async def start(self) -> None:
        """Start the modules; when one fails (a peer unreachable, a TLS mismatch), close
        the gRPC servers and clients made so far too, then raise."""
        try:
            await self.modules.start(sorted(self.config.local, key=_ORDER.index))
        except BaseException:
            await self.stop(0)
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Stop serving gRPC (in-flight calls get ``grace`` seconds), then the modules in
        reverse order, then the clients."""
        for server in self._servers:
            await server.stop(grace)
        await self.modules.stop()
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


class _RedisHolder:
    """Keeps the Redis client among the clients, so :meth:`Cluster.stop` closes it."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def close(self) -> None:
        await self.client.aclose()


_ORDER = ["storage", "processor", "pipeline", "recorder", "api"]
