"""Property-based fuzzing of every API operation over the app's own OpenAPI document.

Schemathesis generates requests from ``/openapi.json``, both valid ones (positive) and
ones that break the schema (negative), plus its deterministic boundary cases, and checks
every answer: no 5xx, a documented status, a documented content type, a body matching
the documented schema (the common error body for every error), documented headers.

The requests go through the :class:`ApiCluster`'s own TestClient (real components on a
temporary data directory), so the app runs on the event loop its components live on;
schemathesis only generates cases and validates responses. Besides generated ids, cases
use ids that exist (a finished session with chunks, a live ingest session, a session
the DELETE cases may remove) and bodies that pass every rule, so the routes behind the
404s and 422s are fuzzed too.

Examples per operation and mode: ``LUCID_FUZZ_EXAMPLES`` (default 40; a nightly run
raises it). Generation is derandomized, so a failure reproduces on every run.
Authentication: the app checks JWT bearer tokens as a served cluster does, and every
request carries an admin's token (the ``headers`` fixture). Each positive case is also
sent without a token and with a forged one, and must then be refused (401) whatever the
rest of the request holds: authentication is never skipped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.generation import GenerationMode
from tests.test_api_support import INGEST, RDP, ApiCluster

from lucid_sessions.api import create_app
from lucid_sessions.api.auth import JwtAuthorizer
from lucid_sessions.security.tokens import TokenSettings, TokenVerifier, mint_token, secret_key

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

EXAMPLES = int(os.environ.get("LUCID_FUZZ_EXAMPLES", "40"))
TOKEN_KEY = secret_key(os.urandom(32), origin="fuzz")
BASE_URL = "http://testserver"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
)


def _operations() -> dict[str, bool]:
    """``METHOD /path`` of every operation -> whether it takes any input (parameters or a
    body) that negative generation can break. From a component-less app: only the
    document is needed at collection time; the test fuzzes the live app's document."""
    app = create_app(pipeline=None, storage=None)  # type: ignore[arg-type]
    document = app.openapi()
    return {
        f"{method.upper()} {path}": bool(op.get("parameters") or op.get("requestBody"))
        for path, operations in document["paths"].items()
        for method, op in operations.items()
    }


OPERATIONS = _operations()
CASES = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label, takes_input in OPERATIONS.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if takes_input or mode is GenerationMode.POSITIVE
]


class Fuzzed:
    """The live cluster, its OpenAPI schema and the ids that exist."""

    def __init__(self, api: ApiCluster, headers: dict[str, str]) -> None:
        self.api = api
        self.schema = schemathesis.openapi.from_dict(api.client.get("/openapi.json").json())
        manifest = api.import_session(frames=30, fps=1, name="fuzz finished")
        self.finished = manifest.session_id
        self.chunks = manifest.tree_size
        self.live = api.create(headers=headers)["session_id"]
        self.victim = api.create(headers=headers)["session_id"]

    def operation(self, label: str) -> Any:
        method, path = label.split(" ", 1)
        return self.schema[path][method]

    def existing_ids(self, label: str) -> list[dict[str, Any]]:
        """Path parameters naming things that exist, for an operation that has them."""
        method, path = label.split(" ", 1)
        if "{session_id}" not in path:
            return []
        # DELETE only ever removes the session kept for it.
        sessions = [self.victim] if method == "DELETE" else [self.finished, self.live, self.victim]
        if "{sequence}" not in path:
            return [{"session_id": sid} for sid in sessions]
        return [
            {"session_id": self.finished, "sequence": seq}
            for seq in sorted({0, self.chunks - 1, self.chunks})
        ]

    @staticmethod
    def valid_bodies(label: str) -> list[dict[str, Any]]:
        """Bodies that pass every rule, for operations whose rules the schema cannot
        fully state (source and its config go together, host names): the success path
        is fuzzed too, with generated parameters around them."""
        if label == "POST /api/v1/sessions":
            return [INGEST, RDP, {"name": "x11", "source": "x11", "x11_config": {"display": ":3"}}]
        if label == "PATCH /api/v1/sessions/{session_id}":
            return [{"name": "renamed", "tags": ["a"], "metadata": {"k": [1, None]}}]
        return []


@pytest.fixture(name="fuzzed", scope="module")
def fuzzed_fixture(
    tmp_path_factory: pytest.TempPathFactory, headers: dict[str, str]
) -> Iterator[Fuzzed]:
    authorizer = JwtAuthorizer(TokenVerifier([TOKEN_KEY], TokenSettings()))
    with ApiCluster(tmp_path_factory.mktemp("fuzz") / "data", authorizer=authorizer) as api:
        yield Fuzzed(api, headers)


@pytest.fixture(name="headers", scope="module")
def headers_fixture() -> dict[str, str]:
    """Headers every fuzzed request carries: an admin's bearer token."""
    token, _ = mint_token(
        TOKEN_KEY, subject="fuzzer", role="admin", ttl_s=3600, settings=TokenSettings()
    )
    return {"Authorization": f"Bearer {token}"}


def assert_refused_without_a_valid_token(client: TestClient, case: Any, answered: int) -> None:
    """The same request without a token, and with a forged one, is a 401 (unless it never
    reached a route: no such path or method, or a body over the cap)."""
    if case.operation.path == "/api/v1/health" or answered in (404, 405, 413):
        return
    forged, _ = mint_token(
        secret_key(b"f" * 32, origin="forger"),
        subject="mallory",
        role="admin",
        ttl_s=60,
        settings=TokenSettings(),
    )
    for headers in ({}, {"Authorization": f"Bearer {forged}"}):
        response, _ = send(client, case, headers)
        assert response.status_code == 401, (case.operation.label, headers, response.text)


def send(client: TestClient, case: Any, headers: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """Send a generated case through the TestClient; the response and what was sent."""
    sent = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    unsupported = set(sent) - {"method", "url", "headers", "params", "cookies", "json", "data"}
    assert not unsupported, f"cannot send {unsupported} through the TestClient"
    body: dict[str, Any] = {}
    if "json" in sent:
        body["json"] = sent["json"]
    elif isinstance(sent.get("data"), bytes | str):
        body["content"] = sent["data"]
    elif sent.get("data") is not None:
        body["data"] = sent["data"]
    request_headers = dict(sent["headers"])
    if sent.get("cookies"):
        request_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sent["cookies"].items())
    response = client.request(
        sent["method"], sent["url"], params=sent.get("params"), headers=request_headers, **body
    )
    return response, sent


@pytest.fixture(autouse=True)
def _pipeline_running(fuzzed: Fuzzed) -> Iterator[None]:
    """A fuzzed ``POST /pipeline/pause`` must not stall the operations fuzzed after it."""
    yield
    fuzzed.api.run(fuzzed.api.pipeline.resume_pipeline)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_operation_answers_as_documented(
    fuzzed: Fuzzed, headers: dict[str, str], label: str, mode: GenerationMode
) -> None:
    operation = fuzzed.operation(label)
    strategies = [operation.as_strategy(generation_mode=mode)]
    strategies += [
        operation.as_strategy(generation_mode=mode, path_parameters=ids)
        for ids in fuzzed.existing_ids(label)
    ]
    if mode is GenerationMode.POSITIVE:
        strategies += [
            operation.as_strategy(generation_mode=mode, body=body, path_parameters=ids)
            for body in fuzzed.valid_bodies(label)
            for ids in fuzzed.existing_ids(label) or [None]
        ]
    client = fuzzed.api.client

    @SETTINGS
    @hypothesis.given(case=st.one_of(strategies))
    def fuzz(case: Any) -> None:
        response, sent = send(client, case, headers)
        case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=sent)
        if mode is GenerationMode.POSITIVE:
            assert_refused_without_a_valid_token(client, case, response.status_code)

    fuzz()


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_every_operation_answers_boundary_cases_as_documented(
    fuzzed: Fuzzed, headers: dict[str, str], label: str
) -> None:
    """Schemathesis's coverage cases: deterministic edges of the schema (each bound and
    just past it, null where it is not allowed, missing required fields, wrong types)."""
    operation = fuzzed.operation(label)
    cases = fuzzed.schema.iter_coverage_cases(
        operation,
        generation_modes=list(GenerationMode),
        generation_config=fuzzed.schema.config.generation_for(operation=operation),
    )
    for case in cases:
        response, sent = send(fuzzed.api.client, case, headers)
        case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=sent)


def test_the_fuzzed_document_is_the_served_one(fuzzed: Fuzzed) -> None:
    """The operations collected from a component-less app are the live app's."""
    served = fuzzed.api.client.get("/openapi.json").json()
    live = [f"{m.upper()} {p}" for p, ops in served["paths"].items() for m in ops]
    assert live == list(OPERATIONS)


def test_the_fuzzed_data_dir_holds_nothing_but_its_own_files(fuzzed: Fuzzed) -> None:
    """Whatever was sent, every file the fuzzing left is inside the data directory's
    layout: the marker, the metadata store, anchors, keys, chunk folders and the session log
    (and live checkpoints)."""
    root: Path = fuzzed.api.path
    expected_top = {
        "lucid-data-dir.json",
        "metadata.db",
        "anchors.jsonl",
        "chunks",
        "keys",
        "log",
        "checkpoints",
    }
    extra = {p.name for p in root.iterdir()} - expected_top
    assert not {name for name in extra if not name.startswith("metadata.db")}, extra
    for folder in (root / "chunks").iterdir():
        assert folder.is_dir() and all(f.name.endswith(".chunk") for f in folder.iterdir())
