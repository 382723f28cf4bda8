"""Health and Prometheus metrics."""

from __future__ import annotations

import asyncio
import inspect
import logging

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lucid_sessions.api.auth import authorize
from lucid_sessions.api.context import ApiContext, HealthCheck, ServiceHealth
from lucid_sessions.api.errors import scrub
from lucid_sessions.api.routes.params import API_PREFIX, ERRORS, LIMIT_ERRORS, Ctx
from lucid_sessions.api.stats import refresh_metrics
from lucid_sessions.errors import LucidError
from lucid_sessions.observability import CONTENT_TYPE

__all__ = ["router"]

log = logging.getLogger("lucid_sessions.api")
router = APIRouter(prefix=API_PREFIX, tags=["system"])


class ServiceState(BaseModel):
    state: str
    healthy: bool
    detail: str


class StorageState(BaseModel):
    healthy: bool
    free_bytes: int
    total_bytes: int
    detail: str


class MetadataState(BaseModel):
    healthy: bool
    kind: str


class HealthOut(BaseModel):
    status: str
    """``healthy`` (answered 200) or ``unhealthy`` (answered 503)."""
    services: dict[str, ServiceState]
    metadata_store: MetadataState
    storage: StorageState


async def _check(check: HealthCheck, timeout: float) -> ServiceHealth:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
    except TimeoutError:
        return ServiceHealth("failed", f"no answer within {timeout:g} s")
    except Exception as exc:
        log.warning("api health check failed error=%r", exc)
        return ServiceHealth("failed", f"the check raised {type(exc).__name__}")
    assert isinstance(result, ServiceHealth)
    return result


async def _health(ctx: ApiContext) -> HealthOut:
    timeout = ctx.settings.health_timeout_s
    names = sorted(ctx.health_checks)
    results = await asyncio.gather(*(_check(ctx.health_checks[n], timeout) for n in names))
    services = {
        name: ServiceState(state=r.state, healthy=r.state == "running", detail=scrub(r.detail))
        for name, r in zip(names, results, strict=True)
    }
    try:
        found = await asyncio.wait_for(ctx.storage.health(), timeout)
        storage = StorageState(
            healthy=found.ok,
            free_bytes=found.free_bytes,
            total_bytes=found.total_bytes,
            detail=scrub(found.detail),
        )
        metadata = MetadataState(healthy=found.ok, kind=found.metadata)
    except (TimeoutError, LucidError) as exc:
        detail = "no answer" if isinstance(exc, TimeoutError) else "unavailable"
        storage = StorageState(healthy=False, free_bytes=0, total_bytes=0, detail=detail)
        metadata = MetadataState(healthy=False, kind="unknown")
    healthy = storage.healthy and all(s.healthy for s in services.values())
    return HealthOut(
        status="healthy" if healthy else "unhealthy",
        services=services,
        metadata_store=metadata,
        storage=storage,
    )


@router.get(
    "/health",
    summary="Each service's state, the metadata store, the storage and its free bytes",
    response_model=HealthOut,
    responses={
        **LIMIT_ERRORS,
        503: {"model": HealthOut, "description": "Something is not healthy"},
    },
)
async def health(ctx: Ctx) -> JSONResponse:
    report = await _health(ctx)
    code = 200 if report.status == "healthy" else 503
    return JSONResponse(report.model_dump(), status_code=code)


@router.get(
    "/metrics",
    dependencies=[Depends(authorize("statistics:read"))],
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **ERRORS},
)
async def metrics(ctx: Ctx) -> Response:
    timeout = ctx.settings.health_timeout_s
    names = sorted(ctx.health_checks)
    results = await asyncio.gather(*(_check(ctx.health_checks[n], timeout) for n in names))
    ctx.metrics.observe_services(
        {name: r.state == "running" for name, r in zip(names, results, strict=True)}
    )
    try:
        await refresh_metrics(
            ctx.metrics,
            ctx.storage,
            ctx.recorder,
            pipeline=ctx.pipeline,
            data_dir=ctx.settings.evidence_dir,
        )
    except LucidError as exc:
        log.warning("api metrics refresh failed error=%s", exc.message)
    return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE)
