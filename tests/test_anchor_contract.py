"""The LucidAnchor contract: committed artifact = pinned compiler(committed source); ids,
roots, revert reasons, locations and the anchoring key, without a chain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.evm_fixtures import TEST_ADDRESSES, TEST_KEYS, run_compile_script

from lucid_sessions.anchoring.contract import (
    ChainLocation,
    artifact,
    decode_revert,
    root_bytes,
    session_key,
)
from lucid_sessions.anchoring.evm import ENV_KEY, ENV_KEY_FILE, AnchorKey
from lucid_sessions.errors import FormatError, InvalidConfigError

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "LucidAnchor.sol"
ARTIFACT = ROOT / "src" / "lucid_sessions" / "anchoring" / "LucidAnchor.json"


def test_artifact_was_compiled_from_the_committed_source():
    committed = json.loads(ARTIFACT.read_text())
    assert committed["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "contracts/LucidAnchor.sol changed: run scripts/compile-contract and commit the artifact"
    )
    assert committed["compiler"]["settings"]["evmVersion"] == "paris"


@pytest.mark.slow
def test_recompiling_reproduces_the_artifact_byte_for_byte(tmp_path):
    out = tmp_path / "LucidAnchor.json"
    run_compile_script("--out", str(out))
    assert out.read_bytes() == ARTIFACT.read_bytes(), (
        "scripts/compile-contract makes a different artifact: commit what it writes"
    )


def test_compiler_is_the_pinned_solc_and_npm_pins_are_exact():
    package = json.loads((ROOT / "contracts" / "package.json").read_text())
    lock = json.loads((ROOT / "contracts" / "package-lock.json").read_text())
    pins = {**package["dependencies"], **package["devDependencies"]}
    assert all(v[0].isdigit() for v in pins.values()), f"pin exact versions: {pins}"
    for name, version in pins.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert artifact()["compiler"]["version"].startswith(pins["solc"] + "+commit.")
    assert pins["hardhat"].startswith("2.")


def test_abi_has_the_interface_the_backends_call():
    entries = {(e["type"], e.get("name")): e for e in artifact()["abi"]}
    signature = {
        name: [i["type"] for i in entries[("function", name)]["inputs"]]
        for name in ("anchor", "rootOf", "records")
    }
    assert signature == {
        "anchor": ["bytes32", "bytes32"],
        "rootOf": ["address", "bytes32"],
        "records": ["address", "bytes32"],
    }
    event = entries[("event", "Anchored")]["inputs"]
    assert [(i["name"], i["type"], i["indexed"]) for i in event] == [
        ("sessionId", "bytes32", True),
        ("root", "bytes32", False),
        ("by", "address", True),
        ("time", "uint256", False),
    ]
    assert ("error", "AlreadyAnchored") in entries
    assert ("error", "ZeroRoot") in entries
    assert artifact()["bytecode"].startswith("0x") and len(artifact()["bytecode"]) > 100


def test_session_key_is_sha256_of_the_utf8_id():
    assert session_key("ses_ä1") == hashlib.sha256("ses_ä1".encode()).digest()
    with pytest.raises(FormatError, match="empty"):
        session_key("")


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("ab" * 31, "not 32 bytes"),
        ("zz" * 32, "not 32 bytes"),
        ("ab" * 33, "not 32 bytes"),
        ("00" * 32, "all zeros"),
    ],
)
def test_bad_roots_are_refused_before_any_call(root, message):
    with pytest.raises(FormatError, match=message):
        root_bytes(root)


def test_roots_with_or_without_0x():
    assert root_bytes("0x" + "ab" * 32) == root_bytes("AB" * 32) == b"\xab" * 32


def test_revert_reasons_are_decoded():
    from eth_abi import encode
    from eth_utils import keccak

    def selector(signature: str) -> bytes:
        return keccak(text=signature)[:4]

    data = selector("AlreadyAnchored(address,bytes32,bytes32)") + encode(
        ["address", "bytes32", "bytes32"], [TEST_ADDRESSES[0], b"\x01" * 32, b"\x02" * 32]
    )
    reason = decode_revert("0x" + data.hex())
    assert reason.startswith("AlreadyAnchored(by=0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")
    assert f"root=0x{'02' * 32}" in reason
    assert decode_revert(selector("ZeroRoot()")) == "ZeroRoot()"
    assert decode_revert(selector("Error(string)") + encode(["string"], ["nope"])) == "nope"
    assert decode_revert(b"") == "reverted without a reason"
    assert decode_revert(b"\xde\xad\xbe\xef") == "reverted with data 0xdeadbeef"


def test_location_round_trips():
    location = ChainLocation(31337, TEST_ADDRESSES[1], TEST_ADDRESSES[0])
    assert ChainLocation.parse(str(location)) == location
    with pytest.raises(FormatError, match="not <chain id>"):
        ChainLocation.parse("0xabc")


def test_anchor_key_from_env_and_file(tmp_path):
    assert AnchorKey.from_env({ENV_KEY: TEST_KEYS[0]}).address == TEST_ADDRESSES[0]
    key_file = tmp_path / "anchor.key"
    key_file.write_text(TEST_KEYS[1][2:] + "\n")
    assert AnchorKey.from_env({ENV_KEY_FILE: str(key_file)}).address == TEST_ADDRESSES[1]
    with pytest.raises(InvalidConfigError, match=f"set {ENV_KEY} or {ENV_KEY_FILE}"):
        AnchorKey.from_env({})
    with pytest.raises(InvalidConfigError, match="cannot read LUCID_ANCHOR_KEY_FILE"):
        AnchorKey.from_env({ENV_KEY_FILE: str(tmp_path / "missing")})


def test_a_bad_key_is_named_by_its_source_never_shown(tmp_path):
    secret = TEST_KEYS[0][2:-2]  # 31 bytes: wrong length
    with pytest.raises(InvalidConfigError) as caught:
        AnchorKey.from_env({ENV_KEY: secret})
    assert "LUCID_ANCHOR_KEY is not a 32-byte hex private key" in str(caught.value)
    assert secret not in str(caught.value)
    with pytest.raises(InvalidConfigError, match="not a valid secp256k1") as caught:
        AnchorKey("ff" * 32)  # above the curve order
    assert "ff" * 32 not in str(caught.value)


def test_anchor_key_repr_shows_only_the_address():
    key = AnchorKey(TEST_KEYS[0])
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert TEST_KEYS[0][2:] not in text.lower()
        assert TEST_ADDRESSES[0] in text


def test_loading_the_evm_backend_keeps_the_recursion_limit() -> None:
    """web3 pulls in py_ecc, which raises the recursion limit to 100,000; the API's and the
    parsers' defences against deeply nested input rely on the default."""
    import subprocess
    import sys

    code = (
        "import sys; before = sys.getrecursionlimit(); "
        "import lucid_sessions.anchoring.evm; "
        "assert sys.getrecursionlimit() == before, sys.getrecursionlimit()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
