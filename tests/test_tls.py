"""TLS: the settings and their checks, HTTPS on the API, (mutual) TLS on gRPC, and five
`serve` processes talking mutual TLS end to end.

Certificates are made at test time (:mod:`tests.tls_fixtures`): a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, and an attacker's CA and
client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.cluster_proc import COMPONENTS, ServeProcess, api_headers, wait_healthy
from tests.servers import free_port
from tests.tls_fixtures import TlsFiles, client_context

from lucid_sessions import rpc
from lucid_sessions.cluster.assembly import Cluster
from lucid_sessions.cluster.config import ClusterConfig, load_config
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.cluster.tls import TlsConfig, grpc_tls
from lucid_sessions.errors import InvalidConfigError, PipelineError
from lucid_sessions.storage.datadir import DataDir


def _grpc_env(files: TlsFiles, *, mutual: bool = True) -> dict[str, str]:
    env = {
        "LUCID_GRPC_TLS_CERT": str(files.server_cert),
        "LUCID_GRPC_TLS_KEY": str(files.server_key),
        "LUCID_GRPC_TLS_CA": str(files.ca),
    }
    if mutual:
        env["LUCID_GRPC_REQUIRE_CLIENT_CERT"] = "true"
    return env


# Settings ---------------------------------------------------------------------------------


def test_tls_settings_come_from_toml_then_environment_then_command_line(tls_files, tmp_path):
    file = tmp_path / "lucid.toml"
    file.write_text(
        f'[api]\ntls_cert = "{tls_files.server_cert}"\ntls_key = "{tls_files.server_key}"\n'
        f'[grpc]\ntls_ca = "{tls_files.rogue_ca}"\n'
    )
    config = load_config(file=file, env=_grpc_env(tls_files))
    assert config.tls == TlsConfig(
        api_cert=tls_files.server_cert,
        api_key=tls_files.server_key,
        grpc_cert=tls_files.server_cert,
        grpc_key=tls_files.server_key,
        grpc_ca=tls_files.ca,
        require_client_cert=True,
    )
    assert config.tls.api and config.tls.grpc
    from_file = load_config(file=file, env={})
    assert from_file.tls.grpc_ca == tls_files.rogue_ca and not from_file.tls.require_client_cert
    options = {
        "grpc_cert": tls_files.server_cert,
        "grpc_key": tls_files.server_key,
        "grpc_ca": tls_files.ca,
        "require_client_cert": True,
        "api_key": None,  # not given
    }
    from_options = load_config(file=file, env={}, tls=options)
    assert from_options.tls == config.tls


def test_no_tls_is_the_default():
    config = load_config(env={})
    assert not config.tls.api and not config.tls.grpc
    assert grpc_tls(config.tls) is None


def test_every_tls_problem_is_reported_at_once_naming_setting_and_file(tls_files, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    secret_garbage = tmp_path / "garbage.key"
    secret_garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNhdXNhZ2U=\n")
    env = {
        "LUCID_API_TLS_CERT": str(tls_files.server_cert),  # without a key
        "LUCID_API_TLS_CLIENT_CA": str(tmp_path / "missing-ca.pem"),
        "LUCID_GRPC_TLS_CERT": str(not_pem),
        "LUCID_GRPC_TLS_KEY": str(secret_garbage),
        "LUCID_GRPC_REQUIRE_CLIENT_CERT": "maybe",
    }
    with pytest.raises(InvalidConfigError) as info:
        load_config(env=env)
    message = info.value.message
    for needle in (
        "api tls_cert is set without api tls_key",
        f"cannot read api tls_client_ca file {tmp_path / 'missing-ca.pem'}: No such file",
        f"grpc tls_cert file {not_pem} holds no PEM certificate",
        f"grpc tls_key file {secret_garbage} holds no PEM private key",
        "grpc require_client_cert must be true or false, not 'maybe'",
    ):
        assert needle in message
    assert len(info.value.details["errors"]) == 5
    assert "c2VjcmV0" not in message and "sausage" not in message


def test_a_key_that_is_not_the_certificates_or_is_encrypted_is_refused(tls_files, tmp_path):
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(InvalidConfigError) as info:
        load_config(
            env={}, tls={"api_cert": tls_files.server_cert, "api_key": tls_files.client_key}
        )
    assert info.value.message.endswith(
        f"api tls_key file {tls_files.client_key} is not the key of api tls_cert file "
        f"{tls_files.server_cert}"
    )
    key = serialization.load_pem_private_key(tls_files.server_key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2"),
        )
    )
    with pytest.raises(InvalidConfigError, match=r"locked\.key is encrypted"):
        load_config(env={}, tls={"api_cert": tls_files.server_cert, "api_key": locked})


def test_mutual_tls_needs_a_ca_and_a_certificate(tls_files):
    with pytest.raises(InvalidConfigError) as info:
        load_config(env={"LUCID_GRPC_REQUIRE_CLIENT_CERT": "1"})
    assert "grpc require_client_cert needs grpc tls_ca" in info.value.message
    assert "grpc require_client_cert needs grpc tls_cert and tls_key" in info.value.message
    with pytest.raises(
        InvalidConfigError, match=r"tls_client_ca \(mutual TLS\) needs api tls_cert"
    ):
        load_config(env={"LUCID_API_TLS_CLIENT_CA": str(tls_files.ca)})


def test_a_process_serving_grpc_with_a_ca_but_no_certificate_is_refused(tls_files):
    env = {"LUCID_GRPC_TLS_CA": str(tls_files.ca)}
    with pytest.raises(InvalidConfigError, match=r"serves gRPC \(storage\) without grpc tls_cert"):
        load_config(env=env, targets="storage,api")
    assert load_config(env=env, targets="api").tls.grpc  # a client only needs the CA
    assert load_config(env=env).all_in_one  # all-in-one serves no gRPC


def test_serve_names_a_bad_tls_option_and_exits_1(cli, tls_files):
    _, _, err = cli("serve", "--tls-cert", str(tls_files.server_cert), expect=1)
    assert err.startswith("error: invalid configuration: api tls_cert is set without api tls_key")
    _, _, err = cli("serve", "--grpc-require-client-cert", "--target", "storage", expect=1)
    assert "grpc require_client_cert needs grpc tls_ca" in err


# The API over HTTPS -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(config: ClusterConfig) -> AsyncIterator[Cluster]:
    cluster = Cluster(config)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop(0)


def _api_config(files: TlsFiles, data_dir: Path, **tls: Any) -> ClusterConfig:
    return load_config(
        env={"LUCID_API_PORT": "0"},
        data_dir=data_dir,
        tls={"api_cert": files.server_cert, "api_key": files.server_key, **tls},
    )


def test_the_api_serves_https_that_only_a_client_trusting_the_ca_accepts(tls_files, data_dir):
    async def scenario() -> None:
        async with running(_api_config(tls_files, data_dir)) as cluster:
            port = cluster.api_port
            async with httpx.AsyncClient(verify=client_context(tls_files.ca)) as client:
                for host in ("127.0.0.1", "localhost"):
                    health = await client.get(f"https://{host}:{port}/api/v1/health")
                    assert health.status_code == 200, health.text
            async with httpx.AsyncClient() as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get(f"http://127.0.0.1:{port}/api/v1/health")
            async with httpx.AsyncClient(verify=client_context(tls_files.rogue_ca)) as fooled:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await fooled.get(f"https://127.0.0.1:{port}/api/v1/health")

    asyncio.run(scenario())


def test_with_a_client_ca_the_api_takes_only_clients_with_its_certificates(tls_files, data_dir):
    async def get(port: int, cert: Path | None = None, key: Path | None = None) -> int:
        context = client_context(tls_files.ca, cert, key)
        async with httpx.AsyncClient(verify=context) as client:
            return (await client.get(f"https://127.0.0.1:{port}/api/v1/health")).status_code

    async def scenario() -> None:
        config = _api_config(tls_files, data_dir, api_client_ca=tls_files.ca)
        async with running(config) as cluster:
            port = cluster.api_port
            assert port is not None
            assert await get(port, tls_files.client_cert, tls_files.client_key) == 200
            with pytest.raises(httpx.TransportError):
                await get(port)
            with pytest.raises(httpx.TransportError):
                await get(port, tls_files.rogue_client_cert, tls_files.rogue_client_key)

    asyncio.run(scenario())


# gRPC -------------------------------------------------------------------------------------


def _material(files: TlsFiles, *, cert: Path | None, key: Path | None, ca: Path | None = None):
    """The gRPC key material of a process with this certificate and CA."""
    config = TlsConfig(
        grpc_cert=cert, grpc_key=key, grpc_ca=ca or files.ca, require_client_cert=cert is not None
    )
    tls = grpc_tls(config)
    assert tls is not None
    return tls


@contextlib.asynccontextmanager
async def storage_server(files: TlsFiles | None, data_dir: Path) -> AsyncIterator[int]:
    """A StorageService on a gRPC port: mutual TLS with ``files``, plaintext without."""
    datadir = DataDir.open(data_dir, create=True)
    credentials = None
    if files is not None:
        tls = _material(files, cert=files.server_cert, key=files.server_key)
        credentials = rpc.server_credentials(tls)
    server, port = await rpc.serve(
        {"storage": StorageService(datadir)}, server_credentials=credentials
    )
    try:
        yield port
    finally:
        await server.stop(0)
        await datadir.close()


def _client(port: int, files: TlsFiles | None, cert: Path | None, key: Path | None, **kw: Any):
    if files is None:
        return rpc.StorageClient(f"127.0.0.1:{port}", timeout=5)
    tls = _material(files, cert=cert, key=key, ca=kw.pop("ca", None))
    return rpc.StorageClient(
        f"127.0.0.1:{port}",
        timeout=5,
        credentials=rpc.channel_credentials(tls),
        options=kw.pop("options", rpc.channel_options(tls)),
    )


def test_grpc_mutual_tls_lets_a_client_with_a_certificate_from_the_ca_in(tls_files, data_dir):
    async def scenario() -> None:
        async with storage_server(tls_files, data_dir) as port:
            for cert, key in (
                (tls_files.client_cert, tls_files.client_key),
                (tls_files.server_cert, tls_files.server_key),  # a peer's own certificate
            ):
                async with _client(port, tls_files, cert, key) as client:
                    assert (await client.health()).ok
                    assert await client.serving()

    asyncio.run(scenario())


@pytest.mark.parametrize("who", ["no client certificate", "the attacker's certificate"])
def test_grpc_mutual_tls_refuses_other_clients_saying_why(tls_files, data_dir, who):
    cert, key = (
        (None, None)
        if who == "no client certificate"
        else (tls_files.rogue_client_cert, tls_files.rogue_client_key)
    )

    async def scenario() -> None:
        async with (
            storage_server(tls_files, data_dir) as port,
            _client(port, tls_files, cert, key) as client,
        ):
            with pytest.raises(Unavailable) as info:
                await client.health()
            assert not await client.serving()
        assert info.value.message.startswith(
            f"127.0.0.1:{port} closed the connection during the TLS handshake: it may "
            "require a client certificate"
        )

    asyncio.run(scenario())


def test_a_plaintext_client_of_a_tls_server_is_told_to_set_the_ca(tls_files, data_dir):
    async def scenario() -> None:
        async with (
            storage_server(tls_files, data_dir) as port,
            _client(port, None, None, None) as client,
        ):
            with pytest.raises(Unavailable) as info:
                await client.health()
        assert info.value.message.startswith(
            f"127.0.0.1:{port} closed the connection while it was set up: if it serves TLS, "
            "set grpc tls_ca (LUCID_GRPC_TLS_CA)"
        )

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["plaintext server", "server from another CA", "wrong name"])
def test_a_tls_client_that_cannot_verify_the_server_says_the_handshake_failed(
    tls_files, data_dir, case
):
    options: dict[str, Any] = {}
    if case == "server from another CA":
        options["ca"] = tls_files.rogue_ca
    if case == "wrong name":
        options["options"] = (("grpc.ssl_target_name_override", "other.example"),)

    async def scenario() -> None:
        files = None if case == "plaintext server" else tls_files
        async with storage_server(files, data_dir) as port:
            cert, key = tls_files.client_cert, tls_files.client_key
            async with _client(port, tls_files, cert, key, **options) as client:
                with pytest.raises(Unavailable) as info:
                    await client.health()
        assert info.value.message.startswith(
            f"TLS handshake with 127.0.0.1:{port} failed: check that it serves TLS and that "
            "its certificate chains to grpc tls_ca and names the host dialled"
        )

    asyncio.run(scenario())


def test_an_explicit_server_name_is_what_clients_check(tls_files, data_dir):
    async def scenario() -> None:
        async with storage_server(tls_files, data_dir) as port:
            config = TlsConfig(
                grpc_cert=tls_files.client_cert,
                grpc_key=tls_files.client_key,
                grpc_ca=tls_files.ca,
                server_name="localhost",
            )
            tls = grpc_tls(config)
            assert tls is not None and rpc.channel_options(tls) == (
                ("grpc.ssl_target_name_override", "localhost"),
            )
            async with _client(
                port,
                tls_files,
                tls_files.client_cert,
                tls_files.client_key,
                options=rpc.channel_options(tls),
            ) as client:
                assert (await client.health()).ok

    asyncio.run(scenario())


# Assembly: every server and client of a process gets the credentials -----------------------


def _split(files: TlsFiles | None, data_dir: Path, targets: str, **ports: int) -> ClusterConfig:
    env = {"LUCID_API_PORT": "0", "LUCID_STORAGE_PORT": "0", "LUCID_PROCESSOR_PORT": "0"}
    env |= {f"LUCID_{name.upper()}_ADDRESS": f"127.0.0.1:{p}" for name, p in ports.items()}
    env |= _grpc_env(files) if files else {}
    return load_config(env=env, targets=targets, data_dir=data_dir)


def test_split_processes_talk_mutual_tls_and_health_checks_go_over_it(tls_files, data_dir):
    async def scenario() -> None:
        async with running(_split(tls_files, data_dir, "storage,processor")) as back:
            ports = back.grpc_ports
            front = _split(tls_files, data_dir, "pipeline,recorder,api", **ports)
            async with running(front) as cluster:
                url = f"http://127.0.0.1:{cluster.api_port}/api/v1/health"
                async with httpx.AsyncClient() as client:
                    health = (await client.get(url)).json()
            assert health["status"] == "healthy", health
            storage = health["services"]["storage"]
            assert storage == {
                "state": "running",
                "healthy": True,
                "detail": f"gRPC 127.0.0.1:{ports['storage']}",
            }

    asyncio.run(scenario())


@pytest.mark.parametrize("tls_side", ["server", "client"])
def test_a_process_whose_tls_does_not_match_fails_to_start_saying_so(tls_files, data_dir, tls_side):
    back_files, front_files = (tls_files, None) if tls_side == "server" else (None, tls_files)
    expected = (
        "closed the connection while it was set up: if it serves TLS"
        if tls_side == "server"
        else "TLS handshake with 127.0.0.1"
    )

    async def scenario() -> None:
        async with running(_split(back_files, data_dir, "storage,processor")) as back:
            front = _split(front_files, data_dir, "pipeline,recorder,api", **back.grpc_ports)
            with pytest.raises(
                PipelineError, match=f"module pipeline failed to start: .*{expected}"
            ):
                async with running(front):
                    pass

    asyncio.run(scenario())


# End to end: five `serve` processes ------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


INGEST = {
    "name": "e2e over mutual TLS",
    "project": "tls",
    "source": "ingest",
    "recording_config": {
        "fps": 10,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.5,
    },
}


async def _plaintext_failure(port: int) -> str:
    async with rpc.StorageClient(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(Unavailable) as info:
            await client.health()
    return info.value.message


@pytest.mark.slow
def test_five_processes_record_over_mutual_tls_with_the_api_on_https(tls_files, tmp_path):
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in COMPONENTS}
    env = {f"LUCID_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    api_args = ["--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)]
    grpc_args = [
        "--grpc-tls-cert",
        str(tls_files.server_cert),
        "--grpc-tls-key",
        str(tls_files.server_key),
        "--grpc-tls-ca",
        str(tls_files.ca),
        "--grpc-require-client-cert",
    ]
    procs = [
        # storage takes its TLS settings from options, the others from the environment
        ServeProcess(data_dir, env, targets="storage", args=grpc_args),
        *(
            ServeProcess(data_dir, env | _grpc_env(tls_files), targets=name)
            for name in ("processor", "pipeline", "recorder")
        ),
        ServeProcess(data_dir, env | _grpc_env(tls_files), targets="api", args=api_args),
    ]
    base = f"https://127.0.0.1:{ports['api']}"
    verify = client_context(tls_files.ca)
    try:
        for proc in procs:
            proc.start()
            if proc.targets != "api":
                time.sleep(0.3)
        wait_healthy(base, procs=procs, timeout=60, verify=verify)
        headers = api_headers(data_dir)
        with httpx.Client(base_url=f"{base}/api/v1", verify=verify, headers=headers) as api:
            created = api.post("/sessions", json=INGEST)
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            assert api.post(f"/sessions/{sid}/start").json()["status"] == "recording"
            rng = np.random.default_rng(7)
            frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            for i in range(15):
                frame[(i * 9) % 200 : (i * 9) % 200 + 30, 20:90] = (i * 17) % 256
                pushed = api.post(
                    f"/sessions/{sid}/frames",
                    content=_png(frame),
                    headers={"content-type": "image/png"},
                )
                assert pushed.status_code == 202, pushed.text
                time.sleep(0.1)
            assert api.post(f"/sessions/{sid}/stop").status_code == 200
            deadline = time.monotonic() + 60
            while (body := api.get(f"/sessions/{sid}").json())["status"] not in {
                "completed",
                "interrupted",
                "failed",
            }:
                assert time.monotonic() < deadline, body
                time.sleep(0.2)
            assert body["status"] == "completed", body
            verified = api.get(f"/sessions/{sid}/verify").json()
            assert verified["ok"] and verified["chunks_checked"] >= 2, verified
        for proc in procs:
            assert "gRPC over TLS" in proc.output() or proc.targets == "api"
        assert "set grpc tls_ca" in asyncio.run(_plaintext_failure(ports["storage"]))
        assert f"API https://127.0.0.1:{ports['api']}/api/v1" in procs[-1].output()
    finally:
        for proc in reversed(procs):
            proc.stop()
