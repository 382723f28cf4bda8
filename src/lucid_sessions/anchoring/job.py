"""Anchoring as a durable job: pending, retried with backoff, confirmed or failed.

After finalisation the pipeline calls :meth:`AnchorJobs.submit` with the signed root.
The job's state is kept with the session, under ``config["anchor"]`` (both metadata
stores persist the session config as it is, so no schema change is needed)::

    {"state": "pending" | "confirmed" | "failed",
     "chain": "local" | "evm" | "tron",
     "root": the manifest's root being anchored,
     "location": log file, or contract (evm: "<chain id>:<contract>:<anchorer>"),
     "transaction": entry hash, or transaction id,
     "block": entry index, or block number,
     "anchorer": the anchoring address (chain backends), else null,
     "attempts": attempts made so far,
     "last_error": why the last attempt failed, or null,
     "updated_at": when this state was written}

``location``, ``transaction`` and ``block`` are null until confirmed. An attempt that
fails with :class:`~lucid_sessions.cluster.interfaces.Unavailable` (or any other error
that may pass) is retried after ``backoff_s``, doubling up to ``max_backoff_s``, until
``max_attempts`` attempts were made; then the state is ``failed`` with the last reason.
A conflict (another root already anchored for the session), a refusal by the contract
or a configuration error fails at once: retrying cannot change them.

Durable: the state is written before the first attempt and after each one, so a process
that stops (or crashes) leaves ``pending`` behind; :meth:`AnchorJobs.recover`, run when
the pipeline starts, picks up every finished session whose anchor is still pending and
carries on with the attempts it has left (an attempt cut short by the stop is not
counted). The backends are idempotent per session id, so an attempt repeated after a
crash returns the receipt of the first instead of anchoring twice.

The receipt cannot go into the manifest: the manifest is signed before anchoring and the
anchor is over its root. It is kept here, and the evidence bundle carries it beside the
manifest as ``anchor.json`` (see :mod:`lucid_sessions.archive.bundle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lucid_sessions.anchoring.contract import AnchorConflict, AnchorRejected
from lucid_sessions.anchoring.local import Anchor, AnchorReceipt
from lucid_sessions.errors import InvalidConfigError, LucidError, NotFoundError
from lucid_sessions.storage.metadata import MetadataStore, utc_now

__all__ = ["FINAL_STATES", "AnchorJobs", "chain_of"]

log = logging.getLogger(__name__)

FINAL_STATES = ("confirmed", "failed")
_SCANNED = ("completed", "interrupted")
_PERMANENT: tuple[type[Exception], ...] = (AnchorConflict, AnchorRejected, InvalidConfigError)


def chain_of(anchor: Anchor) -> str:
    """``local``, ``evm`` or ``tron`` for the built-in backends; a backend's own ``chain``
    attribute otherwise."""
    chain = getattr(anchor, "chain", None)
    if isinstance(chain, str):
        return chain
    module = type(anchor).__module__.rsplit(".", 1)[-1]
    return module if module in ("local", "evm", "tron") else type(anchor).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LucidError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class AnchorJobs:
    """Runs anchoring jobs for one backend; one task per session, at most."""

    def __init__(
        self,
        store: MetadataStore,
        anchor: Anchor,
        *,
        max_attempts: int = 8,
        backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise InvalidConfigError(f"anchor attempts must be at least 1, not {max_attempts}")
        self.store = store
        self.anchor = anchor
        self.chain = chain_of(anchor)
        address = getattr(anchor, "address", None)
        self.anchorer = address if isinstance(address, str) else None
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._scan: asyncio.Task[list[str]] | None = None
        self.counters = {"confirmed": 0, "failed": 0, "retried": 0}

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.max_backoff_s))

    # state

    async def _write(self, session_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
        session = await self.store.get_session(session_id)
        body = {**dict(state), "updated_at": utc_now()}
        await self.store.update_session(session_id, {"config": {**session.config, "anchor": body}})
        return body

    async def state(self, session_id: str) -> dict[str, Any] | None:
        """The session's anchor state as stored, or None."""
        value = (await self.store.get_session(session_id)).config.get("anchor")
        return dict(value) if isinstance(value, Mapping) else None

    # jobs

    async def submit(self, session_id: str, root: str) -> None:
        """Record ``pending`` for ``root`` and start anchoring it in the background.

        A session already confirmed for the same root is left as it is (finalisation is
        idempotent, and so is this)."""
        current = await self.state(session_id)
        if current is not None and current.get("root") == root:
            if current.get("state") == "confirmed":
                return
            if current.get("state") == "pending":
                self._start(session_id)
                return
        await self._write(
            session_id,
            {
                "state": "pending",
                "chain": self.chain,
                "root": root,
                "location": None,
                "transaction": None,
                "block": None,
                "anchorer": self.anchorer,
                "attempts": 0,
                "last_error": None,
            },
        )
        self._start(session_id)

    def _start(self, session_id: str) -> None:
        if session_id in self._tasks:
            return
        task = asyncio.create_task(self._run(session_id), name=f"anchor-{session_id}")
        self._tasks[session_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(session_id, None))

    async def _run(self, session_id: str) -> None:
        try:
            await self._attempts(session_id)
        except asyncio.CancelledError:
            raise
        except NotFoundError:
            log.info("anchoring %s stopped: the session is gone", session_id)
        except Exception as exc:  # the job must never die silently
            log.error("anchoring %s stopped: %s", session_id, _reason(exc))

    async def _attempts(self, session_id: str) -> None:
        state = await self.state(session_id)
        if state is None or state.get("state") != "pending":
            return
        root = str(state["root"])
        attempts = int(state.get("attempts") or 0)
        if attempts:
            await self._sleep(self.delay(attempts))
        while True:
            try:
                receipt = await self.anchor.anchor(session_id, root)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempts += 1
                reason = _reason(exc)
                final = isinstance(exc, _PERMANENT) or attempts >= self.max_attempts
                await self._write(
                    session_id,
                    {
                        **state,
                        "state": "failed" if final else "pending",
                        "attempts": attempts,
                        "last_error": reason,
                    },
                )
                if final:
                    self.counters["failed"] += 1
                    log.error(
                        "anchoring %s on %s failed after %d attempts: %s",
                        session_id,
                        self.chain,
                        attempts,
                        reason,
                    )
                    return
                self.counters["retried"] += 1
                wait = self.delay(attempts)
                log.warning(
                    "anchoring %s on %s: attempt %d failed (%s); retrying in %.1f s",
                    session_id,
                    self.chain,
                    attempts,
                    reason,
                    wait,
                )
                await self._sleep(wait)
                continue
            await self._confirm(session_id, state, attempts + 1, receipt)
            return

    async def _confirm(
        self, session_id: str, state: Mapping[str, Any], attempts: int, receipt: AnchorReceipt
    ) -> None:
        await self._write(
            session_id,
            {
                **state,
                "state": "confirmed",
                "chain": receipt.chain,
                "location": receipt.location,
                "transaction": receipt.transaction,
                "block": receipt.block,
                "attempts": attempts,
                "last_error": None,
            },
        )
        self.counters["confirmed"] += 1
        log.info(
            "anchored %s on %s in %s, block %d",
            session_id,
            receipt.chain,
            receipt.transaction,
            receipt.block,
        )

    async def recover(self) -> list[str]:
        """Resume every finished session whose anchor is pending; their ids."""
        resumed = []
        for status in _SCANNED:
            offset = 0
            while True:
                page = await self.store.list_sessions(status=status, limit=200, offset=offset)
                for session in page.items:
                    anchor = session.config.get("anchor")
                    if isinstance(anchor, Mapping) and anchor.get("state") == "pending":
                        self._start(session.session_id)
                        resumed.append(session.session_id)
                if not page.has_next:
                    break
                offset += len(page.items)
        if resumed:
            log.info("resumed anchoring of %d sessions", len(resumed))
        return resumed

    def start_recovery(self) -> None:
        """:meth:`recover` in the background (it pages through every finished session)."""
        if self._scan is None or self._scan.done():
            self._scan = asyncio.create_task(self._recover_logged(), name="anchor-recover")

    async def _recover_logged(self) -> list[str]:
        try:
            return await self.recover()
        except LucidError as exc:
            log.error("could not resume pending anchors: %s", exc.message)
            return []

    @property
    def running(self) -> list[str]:
        return sorted(self._tasks)

    async def wait(self, session_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the session's anchor is confirmed or failed; its state."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.state(session_id)
            if state is not None and state.get("state") in FINAL_STATES:
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"anchoring {session_id} did not finish within {timeout} s")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop every job; what is pending stays pending and is resumed on next start."""
        tasks = [*self._tasks.values(), *([self._scan] if self._scan else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._scan = None
