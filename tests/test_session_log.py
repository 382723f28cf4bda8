"""The cluster-wide session log: appended on finalisation, signed heads, every rewrite named.

Each kind of rewrite is made on a log of real finalised sessions and must be found and
named by ``verify_log`` and by ``lucid-sessions log verify`` (exit 1): a leaf removed,
edited or reordered, the log truncated, a head's root replaced, a session deleted from
the store, a finalised session added to the store without a leaf.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from tests.conftest import Cli, write_images
from tests.test_checkpoints import Rig

from lucid_sessions.anchoring.session_log import (
    SessionLog,
    StoredSession,
    manifest_sha256,
    verify_log,
)
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import StorageError
from lucid_sessions.storage.datadir import DataDir


def _manifest(i: int) -> bytes:
    return json.dumps({"session": i}).encode()


@pytest.fixture
def unit(tmp_path):
    """A log of four sessions and the store that matches it."""
    key = ClusterKey.generate()
    log = SessionLog(tmp_path, key)
    for i in range(4):
        log.append_session(f"ses_{i}", _manifest(i))
    store = [StoredSession(f"ses_{i}", "completed", _manifest(i)) for i in range(4)]
    return log, key.public_key_bytes(), store


def _check(log: SessionLog, public_key: bytes, store, **kwargs):
    leaves, heads = log.raw()
    return verify_log(leaves, heads, public_key, store=store, **kwargs)


def _kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def _edit(path: Path, change) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in change(lines)))


def test_appends_sign_a_head_each_and_verify(unit):
    log, public_key, store = unit
    report = _check(log, public_key, store)
    assert report.ok, report.problems
    assert (report.leaves, report.heads, report.unsigned_tail) == (4, 4, 0)
    assert [h.size for h in log.heads()] == [1, 2, 3, 4]
    assert all(h.signature_ok(public_key) for h in log.heads())
    assert [leaf.manifest_sha256 for leaf in log.leaves()] == [
        manifest_sha256(_manifest(i)) for i in range(4)
    ]


def test_appending_again_is_idempotent_and_another_manifest_is_refused(unit):
    log, _, _ = unit
    leaf, head = log.append_session("ses_1", _manifest(1))
    assert (leaf.index, head.size) == (1, 4)
    assert len(log.leaves()) == 4
    with pytest.raises(StorageError, match="already in the log with another manifest"):
        log.append_session("ses_1", b"{}")


def test_consistency_between_two_chosen_heads(unit):
    log, public_key, store = unit
    report = _check(log, public_key, store, from_size=1, to_size=3)
    assert report.ok and report.checked_range == (1, 3)
    report = _check(log, public_key, store, from_size=2, to_size=9)
    assert "inconsistent" in _kinds(report)


def test_a_removed_leaf_is_named(unit):
    log, public_key, store = unit
    _edit(log.leaves_path, lambda lines: [lines[0], *lines[2:]])
    report = _check(log, public_key, store)
    assert "removed" in _kinds(report)
    assert any("leaf 1 is missing" in p.message for p in report.problems)
    assert any(p.kind == "withheld" and "ses_1" in p.message for p in report.problems)


def test_an_edited_leaf_is_named(unit):
    log, public_key, store = unit

    def edit(lines):
        leaf = json.loads(lines[2])
        leaf["manifest_sha256"] = "ab" * 32
        return [*lines[:2], json.dumps(leaf), *lines[3:]]

    _edit(log.leaves_path, edit)
    report = _check(log, public_key, store)
    assert any(p.kind == "edited" and p.message.startswith("leaf 2 ") for p in report.problems)
    assert any(p.kind == "altered" and "ses_2" in p.message for p in report.problems)


def test_an_edited_leaf_is_found_by_the_heads_even_with_the_store_edited_too(unit):
    """The store's manifest replaced to match the edited leaf: the signed heads remain."""
    log, public_key, store = unit

    def edit(lines):
        leaf = json.loads(lines[2])
        leaf["manifest_sha256"] = manifest_sha256(b"forged")
        return [*lines[:2], json.dumps(leaf), *lines[3:]]

    _edit(log.leaves_path, edit)
    store[2] = StoredSession("ses_2", "completed", b"forged")
    report = _check(log, public_key, store)
    assert _kinds(report) == {"edited"}


def test_reordered_leaves_are_named(unit):
    log, public_key, store = unit
    _edit(log.leaves_path, lambda lines: [lines[0], lines[2], lines[1], lines[3]])
    report = _check(log, public_key, store)
    assert "reordered" in _kinds(report)
    assert any(
        "leaf 2 (session ses_2) is stored at position 1" in p.message for p in report.problems
    )


def test_a_truncated_log_is_named(unit):
    log, public_key, store = unit
    _edit(log.leaves_path, lambda lines: lines[:2])
    report = _check(log, public_key, store)
    assert "truncated" in _kinds(report)
    assert any("leaves 2..3 were cut off" in p.message for p in report.problems)
    assert {p.message.split()[1] for p in report.problems if p.kind == "withheld"} == {
        "ses_2",
        "ses_3",
    }


def test_a_replaced_head_root_is_named(unit):
    log, public_key, store = unit

    def edit(lines):
        head = json.loads(lines[1])
        head["root"] = "00" * 32
        return [lines[0], json.dumps(head), *lines[2:]]

    _edit(log.heads_path, edit)
    report = _check(log, public_key, store)
    assert _kinds(report) == {"signature"}
    assert report.problems[0].message.startswith("head 1 (size 2,")


def test_heads_signed_by_another_key_are_refused(unit):
    log, _, store = unit
    report = _check(log, ClusterKey.generate().public_key_bytes(), store)
    assert _kinds(report) == {"signature"} and len(report.problems) == 4


def test_a_session_deleted_from_the_store_is_named(unit):
    log, public_key, store = unit
    report = _check(log, public_key, store[:1] + store[2:])
    assert _kinds(report) == {"deleted"}
    assert "ses_1" in report.problems[0].message


def test_a_finalised_session_added_to_the_store_without_a_leaf_is_named(unit):
    log, public_key, store = unit
    report = _check(log, public_key, [*store, StoredSession("ses_new", "completed", b"{}")])
    assert _kinds(report) == {"withheld"}
    assert "ses_new" in report.problems[0].message
    # a session with no manifest (still recording) is not expected in the log
    report = _check(log, public_key, [*store, StoredSession("ses_open", "recording", None)])
    assert report.ok


def test_leaves_after_the_latest_head_are_counted_not_failed(unit):
    """A crash between writing a leaf and its head: the next append signs both."""
    log, public_key, store = unit
    _edit(log.heads_path, lambda lines: lines[:-1])
    report = _check(log, public_key, store)
    assert report.ok and report.unsigned_tail == 1
    _, head = log.append_session("ses_3", _manifest(3))
    assert head.size == 4
    assert _check(log, public_key, store).unsigned_tail == 0


# the real thing: the pipeline appends on finalisation, the CLI verifies


@pytest.fixture(scope="module")
def cluster_log(tmp_path_factory):
    """Two sessions recorded through the pipeline and one imported with the CLI."""
    base = tmp_path_factory.mktemp("session-log")
    path = base / "data"

    async def run():
        async with Rig(path, every=0) as rig:
            return [await rig.record(0.6) for _ in range(2)]

    sessions = asyncio.run(run())
    write_images(base / "shots", 6)
    cli = Cli(path)
    _, out, _ = cli("import", str(base / "shots"), "--name", "imported", "--fps", "2")
    return path, [*sessions, out.strip()]


def test_finalised_sessions_are_appended_and_log_verify_passes(cluster_log):
    path, sessions = cluster_log
    log = SessionLog(path)
    assert [leaf.session_id for leaf in log.leaves()] == sessions
    assert [h.size for h in log.heads()] == [1, 2, 3]
    anchored = {
        json.loads(line)["session_id"]: json.loads(line)["root"]
        for line in (path / "anchors.jsonl").read_text().splitlines()
    }
    heads = log.heads()
    assert anchored["log@1"] == heads[0].root and anchored["log@2"] == heads[1].root
    _, out, _ = Cli(path)("log", "verify")
    assert out.startswith("OK: session log: 3 leaves, head size 3")
    _, out, _ = Cli(path)("log", "verify", "--from", "1", "--to", "3")
    assert "heads of size 1 and 3: consistent" in out
    _, out, _ = Cli(path)("log", "show")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2", "3"]
    _, out, _ = Cli(path)("log", "verify", "--json")
    assert json.loads(out)["ok"] is True


@pytest.fixture
def copy(cluster_log, tmp_path):
    import shutil

    path, sessions = cluster_log
    target = tmp_path / "data"
    shutil.copytree(path, target)
    return target, sessions


def _cli_problems(path: Path) -> tuple[str, list[dict]]:
    _, out, _ = Cli(path)("log", "verify", expect=1)
    _, body, _ = Cli(path)("log", "verify", "--json", expect=1)
    return out, json.loads(body)["problems"]


@pytest.mark.parametrize(
    ("rewrite", "kind"),
    [
        ("remove", "removed"),
        ("edit", "edited"),
        ("reorder", "reordered"),
        ("truncate", "truncated"),
        ("head", "signature"),
    ],
)
def test_log_verify_names_each_rewrite_of_the_log(copy, rewrite, kind):
    path, _ = copy
    log = SessionLog(path)

    def edit_leaf(lines):
        leaf = json.loads(lines[1])
        leaf["time"] = "2000-01-01T00:00:00.000000Z"
        return [lines[0], json.dumps(leaf), *lines[2:]]

    def edit_head(lines):
        head = json.loads(lines[0])
        head["root"] = "11" * 32
        return [json.dumps(head), *lines[1:]]

    target, change = {
        "remove": (log.leaves_path, lambda lines: [lines[0], *lines[2:]]),
        "edit": (log.leaves_path, edit_leaf),
        "reorder": (log.leaves_path, lambda lines: [lines[1], lines[0], lines[2]]),
        "truncate": (log.leaves_path, lambda lines: lines[:1]),
        "head": (log.heads_path, edit_head),
    }[rewrite]
    _edit(target, change)
    out, problems = _cli_problems(path)
    assert out.startswith("FAILED: session log:")
    assert kind in {p["kind"] for p in problems}, problems
    assert f"  {kind}: " in out


def test_log_verify_names_a_session_deleted_from_the_store(copy):
    path, sessions = copy
    with sqlite3.connect(path / "metadata.db") as db:
        for table in ("manifests", "chunks", "sessions"):
            db.execute(f"DELETE FROM {table} WHERE session_id = ?", (sessions[1],))
    out, problems = _cli_problems(path)
    assert [p["kind"] for p in problems] == ["deleted"]
    assert sessions[1] in out


def test_log_verify_names_a_finalised_session_added_without_a_leaf(copy, tmp_path):
    path, _ = copy
    log = SessionLog(path)
    lines = log.leaves_path.read_text()
    heads = log.heads_path.read_text()
    write_images(tmp_path / "more", 4)
    _, out, _ = Cli(path)("import", str(tmp_path / "more"), "--name", "sneaked in")
    sneaked = out.strip()
    log.leaves_path.write_text(lines)  # as if it had never been appended
    log.heads_path.write_text(heads)
    out, problems = _cli_problems(path)
    assert [p["kind"] for p in problems] == ["withheld"]
    assert sneaked in out


def test_log_verify_names_a_manifest_replaced_in_the_store(copy):
    path, sessions = copy

    async def forge():
        datadir = DataDir.open(path)
        try:
            return (await datadir.store.get_manifest(sessions[0])).manifest
        finally:
            await datadir.close()

    manifest = asyncio.run(forge())
    forged = manifest.replace(b'"name":"', b'"name":"x', 1)
    with sqlite3.connect(path / "metadata.db") as db:
        db.execute("UPDATE manifests SET manifest = ? WHERE session_id = ?", (forged, sessions[0]))
    _, problems = _cli_problems(path)
    assert [p["kind"] for p in problems] == ["altered"]
