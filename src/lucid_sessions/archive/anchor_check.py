"""The anchor receipt in the evidence, and checking it against the chain.

**Where the receipt lives.** The manifest is signed over the session's root, and the
root is what gets anchored, so the anchor's receipt only exists after the manifest is
signed and cannot be inside it. It is kept with the session (``config["anchor"]``, see
:mod:`lucid_sessions.anchoring.job`) and travels in the evidence bundle beside the
manifest as ``anchor.json`` (:func:`anchor_document`). The receipt is not signed and
need not be: it only says where to look. What proves the anchor is the chain itself,
read by :func:`check_anchor` with ``verify --chain-url``: the root recorded there for
the session (by the pinned contract and anchoring address) must equal the signed root.

Without a URL, verification stays offline and says the anchor was not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from lucid_sessions.errors import FormatError, InvalidConfigError

__all__ = [
    "ANCHOR_FORMAT",
    "ANCHOR_MEMBER",
    "ChainTarget",
    "anchor_document",
    "check_anchor",
    "offline_line",
]

ANCHOR_FORMAT = "lucid-sessions-anchor"
ANCHOR_MEMBER = "anchor.json"
_FIELDS = (
    "state",
    "chain",
    "root",
    "location",
    "transaction",
    "block",
    "anchorer",
    "attempts",
    "last_error",
    "updated_at",
)


def anchor_document(session_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """What a bundle's ``anchor.json`` holds: the session's anchor state and receipt.

    A receipt stored before anchoring became a job has no ``state``: it was written only
    once the anchor was made, so it is ``confirmed``."""
    body = {name: state.get(name) for name in _FIELDS}
    if not isinstance(body["state"], str):
        body["state"] = "confirmed" if body["transaction"] else "pending"
    return {"format": ANCHOR_FORMAT, "version": 1, "session_id": session_id, **body}


def parse_anchor_document(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("format") != ANCHOR_FORMAT:
        raise FormatError("bundle anchor.json is not an anchor receipt")
    if body.get("version") != 1:
        raise FormatError(f"anchor receipt version {body.get('version')} is not supported")
    if not isinstance(body.get("state"), str) or not isinstance(body.get("chain"), str):
        raise FormatError("bundle anchor.json is malformed (state, chain)")
    block = body.get("block")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool)):
        raise FormatError("bundle anchor.json is malformed (block)")
    return body


def offline_line(receipt: Mapping[str, Any] | None) -> str:
    """The line ``verify`` prints when the chain was not asked."""
    if receipt is None:
        return "anchor: no receipt"
    chain = receipt.get("chain")
    state = receipt.get("state")
    if state == "confirmed":
        said = f"receipt says {chain} tx {receipt.get('transaction')} block {receipt.get('block')}"
    elif state == "failed":
        said = f"anchoring on {chain} failed: {receipt.get('last_error')}"
    else:
        said = f"anchoring on {chain} is {state} ({receipt.get('attempts') or 0} attempts)"
    return f"anchor: not checked (no --chain-url); {said}"


@dataclass(frozen=True, slots=True)
class ChainTarget:
    """What ``verify --chain-url`` was given; None means take it from the receipt."""

    url: str
    chain: str | None = None
    contract: str | None = None
    anchorer: str | None = None


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    ok: bool
    line: str
    """``anchor: confirmed ...`` or the failure's message."""


def _local_entry(
    path: Path, session_id: str, public_key: bytes
) -> tuple[dict[str, object] | None, str]:
    """(the log's entry for the session or None, the log's first problem or "")."""
    from lucid_sessions.anchoring.local import LocalAnchorLog

    if not path.is_file():
        raise InvalidConfigError(f"anchor log {path} does not exist")
    log = LocalAnchorLog(path, None)  # type: ignore[arg-type]  # read only: no key needed
    problems = log.verify(public_key)
    return log.find(session_id), (problems[0] if problems else "")


def _log_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("", None):
        return Path(url)
    raise InvalidConfigError(
        f"for the local backend, --chain-url is the anchors.jsonl file, not a {parts.scheme} URL"
    )


def check_anchor(
    target: ChainTarget,
    *,
    session_id: str,
    root: str,
    receipt: Mapping[str, Any] | None,
    public_key: bytes,
) -> AnchorFinding:
    """Read the root anchored for ``session_id`` where ``target`` says (falling back on the
    receipt for the chain, contract and anchoring address) and compare it with ``root``.

    Unreachable nodes and unusable arguments raise; a root that differs or is missing is
    a finding with ``ok`` False."""
    receipt = receipt or {}
    chain = target.chain or receipt.get("chain")
    if chain not in ("local", "evm", "tron"):
        raise InvalidConfigError(
            "which chain? the bundle has no anchor receipt: pass --chain evm|tron|local"
        )
    from_receipt = receipt.get("chain") == chain
    tx = receipt.get("transaction") if from_receipt else None
    block = receipt.get("block") if from_receipt else None
    if chain == "local":
        path = _log_path(target.url)
        entry, problem = _local_entry(path, session_id, public_key)
        if problem:
            return AnchorFinding(False, f"the anchor log {path} is not intact: {problem}")
        if entry is None:
            return AnchorFinding(
                False, f"no root for session {session_id} in the anchor log {path}"
            )
        if entry.get("root") != root:
            return AnchorFinding(
                False,
                f"the anchor log {path} holds root {entry.get('root')} for this session, "
                f"not the manifest's {root}",
            )
        return AnchorFinding(
            True,
            f"anchor: confirmed on local at {path} in tx {entry.get('hash')}, "
            f"block {entry.get('index')} (entry signed by the manifest's key)",
        )
    location = str(receipt.get("location") or "") if from_receipt else ""
    contract, anchorer = target.contract, target.anchorer
    if chain == "evm" and location:
        from lucid_sessions.anchoring.contract import ChainLocation

        try:
            parsed = ChainLocation.parse(location)
            contract = contract or parsed.contract
            anchorer = anchorer or parsed.anchorer
        except FormatError:
            pass
    if chain == "tron" and location:
        contract = contract or location
    if from_receipt and isinstance(receipt.get("anchorer"), str):
        anchorer = anchorer or str(receipt["anchorer"])
    if not contract:
        raise InvalidConfigError(f"no contract for {chain}: pass --contract")
    if not anchorer:
        raise InvalidConfigError(f"no anchoring address for {chain}: pass --anchorer")
    pinned = target.contract is not None and target.anchorer is not None
    if chain == "evm":
        from lucid_sessions.anchoring.evm import read_anchor
    else:
        from lucid_sessions.anchoring.tron import read_anchor  # type: ignore[assignment]
    found = read_anchor(target.url, contract, session_id, anchorer)
    if found is None:
        return AnchorFinding(
            False, f"no root for session {session_id} on {chain} at {contract} by {anchorer}"
        )
    onchain, _when = found
    if onchain.lower() != root.lower():
        return AnchorFinding(
            False,
            f"the root on {chain} at {contract} for this session is {onchain}, "
            f"not the manifest's {root}",
        )
    where = f"in tx {tx}, block {block}" if tx is not None else "(no receipt for the transaction)"
    trust = (
        ""
        if pinned
        else "; contract and anchoring address taken from the receipt, not pinned "
        "(pass --contract and --anchorer)"
    )
    return AnchorFinding(
        True, f"anchor: confirmed on {chain} at {contract} {where}, by {anchorer}{trust}"
    )
