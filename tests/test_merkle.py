"""Tests for lucid_sessions.merkle: RFC 9162 tree shape, proofs, and their verification."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.merkle import (
    HASH_ALGORITHMS,
    Hasher,
    MerkleTree,
    get_hasher,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

SHA256 = get_hasher("sha256")
BLAKE3 = get_hasher("blake3")

# ---------------------------------------------------------------------------------------------
# Certificate Transparency test vectors (SHA-256).
#
# Source: github.com/transparency-dev/merkle, proof/verify_test.go (variables `leaves`, `roots`,
# `inclusionProofs`, `consistencyProofs`; the same data as the RFC 6962 vectors in
# google/certificate-transparency and google/trillian), and rfc6962/rfc6962_test.go
# (TestRFC6962Hasher).  In verify_test.go the inclusion vectors give the leaf as a 1-based
# number; the indices below are 0-based.
# ---------------------------------------------------------------------------------------------

CT_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# CT_ROOTS[n - 1] is the root of the first n CT_LEAVES.
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# (leaf index, tree size, proof)
CT_INCLUSION_PROOFS: list[tuple[int, int, list[str]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, proof)
CT_CONSISTENCY_PROOFS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CT_EMPTY_LEAF_HASH = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
CT_LEAF_L123456 = "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
CT_NODE_N123_N456 = "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


def _ct_tree() -> MerkleTree:
    return MerkleTree(SHA256, [SHA256.leaf_hash(leaf) for leaf in CT_LEAVES])


def _hexes(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


# ---------------------------------------------------------------------------------------------
# Naive reference implementation, written straight from RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1.
# `d` is a list of leaf hashes (HASH(0x00 || leaf) already applied).
# ---------------------------------------------------------------------------------------------


def ref_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while 2 * k < n:
        k *= 2
    return k


def ref_mth(h: Hasher, d: list[bytes]) -> bytes:
    if len(d) == 0:
        return h.empty_root()
    if len(d) == 1:
        return d[0]
    k = ref_k(len(d))
    return h.node_hash(ref_mth(h, d[:k]), ref_mth(h, d[k:]))


def ref_path(h: Hasher, m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_k(len(d))
    if m < k:
        return [*ref_path(h, m, d[:k]), ref_mth(h, d[k:])]
    return [*ref_path(h, m - k, d[k:]), ref_mth(h, d[:k])]


def ref_subproof(h: Hasher, m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(h, d)]
    k = ref_k(len(d))
    if m <= k:
        return [*ref_subproof(h, m, d[:k], b), ref_mth(h, d[k:])]
    return [*ref_subproof(h, m - k, d[k:], False), ref_mth(h, d[:k])]


def ref_proof(h: Hasher, m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(h, m, d, True)


def inclusion_shape(m: int, n: int) -> list[str] | None:
    """The left/right turns of PATH(m, D[n]) from the root down; None if m is not a leaf."""
    if not 0 <= m < n:
        return None
    turns = []
    while n > 1:
        k = ref_k(n)
        if m < k:
            turns.append("L")
            n = k
        else:
            turns.append("R")
            m, n = m - k, n - k
    return turns


def consistency_shape(m: int, n: int) -> list[str] | None:
    """The turns of SUBPROOF(m, D[n], true) and its final flag; None unless 0 < m < n."""
    if not 0 < m < n:
        return None
    turns = []
    b = True
    while m != n:
        k = ref_k(n)
        if m <= k:
            turns.append("L")
            n = k
        else:
            turns.append("R")
            m, n, b = m - k, n - k, False
    turns.append(f"end:{b}")
    return turns


def leaf_hashes(h: Hasher, n: int, salt: bytes = b"") -> list[bytes]:
    """n distinct leaf hashes (distinct leaves make every wrong-position check meaningful)."""
    return [h.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def flip_bit(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Hasher
# ---------------------------------------------------------------------------------------------


def test_default_hasher_is_blake3_with_32_byte_digests() -> None:
    hasher = get_hasher()
    assert hasher == BLAKE3
    assert hasher.name == "blake3"
    assert hasher.digest_size == 32
    assert HASH_ALGORITHMS[0] == "blake3"


def test_blake3_hasher_uses_rfc9162_prefixes() -> None:
    assert BLAKE3.leaf_hash(b"chunk") == blake3(b"\x00chunk").digest()
    left, right = b"L" * 32, b"R" * 32
    assert BLAKE3.node_hash(left, right) == blake3(b"\x01" + left + right).digest()
    assert BLAKE3.empty_root() == blake3(b"").digest()


def test_sha256_hasher_matches_ct_hasher_vectors() -> None:
    assert SHA256.empty_root().hex() == CT_EMPTY_ROOT
    assert SHA256.leaf_hash(b"").hex() == CT_EMPTY_LEAF_HASH
    assert SHA256.leaf_hash(b"L123456").hex() == CT_LEAF_L123456
    assert SHA256.node_hash(b"N123", b"N456").hex() == CT_NODE_N123_N456
    assert SHA256.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()


@pytest.mark.parametrize("name", ["md5", "SHA256", "", "blake2b"])
def test_unknown_hash_algorithm_is_a_config_error_naming_it(name: str) -> None:
    with pytest.raises(InvalidConfigError, match=repr(name)) as info:
        get_hasher(name)
    assert info.value.code == "LUCID_ERR_3002"
    with pytest.raises(InvalidConfigError):
        Hasher(name)


def test_hashers_compare_by_algorithm() -> None:
    assert get_hasher("sha256") == Hasher("sha256")
    assert get_hasher("sha256") != get_hasher("blake3")
    assert len({get_hasher("blake3"), Hasher("blake3")}) == 1


# ---------------------------------------------------------------------------------------------
# Certificate Transparency compatibility (SHA-256)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 9))
def test_sha256_roots_equal_ct_roots(size: int) -> None:
    tree = _ct_tree()
    assert tree.root(size).hex() == CT_ROOTS[size - 1]
    fresh = MerkleTree(SHA256, [SHA256.leaf_hash(leaf) for leaf in CT_LEAVES[:size]])
    assert fresh.root().hex() == CT_ROOTS[size - 1]


def test_sha256_empty_tree_root_equals_ct_empty_root() -> None:
    assert MerkleTree(SHA256).root().hex() == CT_EMPTY_ROOT
    assert _ct_tree().root(0).hex() == CT_EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION_PROOFS)
def test_sha256_inclusion_proofs_equal_ct_proofs(index: int, size: int, proof: list[str]) -> None:
    tree = _ct_tree()
    assert _hexes(tree.inclusion_proof(index, size)) == proof
    leaf_hash = SHA256.leaf_hash(CT_LEAVES[index])
    root = bytes.fromhex(CT_ROOTS[size - 1])
    path = [bytes.fromhex(p) for p in proof]
    assert verify_inclusion(SHA256, index, size, leaf_hash, path, root)
    assert root_from_inclusion_proof(SHA256, index, size, leaf_hash, path) == root


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CT_CONSISTENCY_PROOFS)
def test_sha256_consistency_proofs_equal_ct_proofs(
    old_size: int, new_size: int, proof: list[str]
) -> None:
    tree = _ct_tree()
    assert _hexes(tree.consistency_proof(old_size, new_size)) == proof
    old_root = bytes.fromhex(CT_ROOTS[old_size - 1])
    new_root = bytes.fromhex(CT_ROOTS[new_size - 1])
    path = [bytes.fromhex(p) for p in proof]
    assert verify_consistency(SHA256, old_size, new_size, old_root, new_root, path)


def test_ct_vectors_agree_with_reference_implementation() -> None:
    """Guards the reference implementation the property tests trust."""
    d = [SHA256.leaf_hash(leaf) for leaf in CT_LEAVES]
    assert [ref_mth(SHA256, d[:n]).hex() for n in range(1, 9)] == CT_ROOTS
    for index, size, proof in CT_INCLUSION_PROOFS:
        assert _hexes(ref_path(SHA256, index, d[:size])) == proof
    for old_size, new_size, proof in CT_CONSISTENCY_PROOFS:
        assert _hexes(ref_proof(SHA256, old_size, d[:new_size])) == proof


# ---------------------------------------------------------------------------------------------
# Property tests against the reference implementation
# ---------------------------------------------------------------------------------------------

hashers = st.sampled_from([BLAKE3, SHA256])
tree_sizes = st.integers(min_value=1, max_value=300)
salts = st.binary(max_size=8)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(hasher=hashers, n=tree_sizes, salt=salts, data=st.data())
def test_roots_and_proofs_equal_reference(
    hasher: Hasher, n: int, salt: bytes, data: st.DataObject
) -> None:
    d = leaf_hashes(hasher, n, salt)
    tree = MerkleTree(hasher, d)
    assert tree.size == n
    assert tree.root() == ref_mth(hasher, d)

    size = data.draw(st.integers(1, n), label="historical size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old_size = data.draw(st.integers(1, size), label="old size")
    assert tree.root(size) == ref_mth(hasher, d[:size])
    assert tree.inclusion_proof(index, size) == ref_path(hasher, index, d[:size])
    assert tree.consistency_proof(old_size, size) == ref_proof(hasher, old_size, d[:size])
    if size == n:
        assert tree.inclusion_proof(index) == tree.inclusion_proof(index, n)
        assert tree.consistency_proof(old_size) == tree.consistency_proof(old_size, n)


@PROPERTY_SETTINGS
@given(hasher=hashers, n=tree_sizes, salt=salts, data=st.data())
def test_inclusion_proofs_verify_and_tampering_fails(
    hasher: Hasher, n: int, salt: bytes, data: st.DataObject
) -> None:
    d = leaf_hashes(hasher, n, salt)
    tree = MerkleTree(hasher, d)
    root = tree.root()
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = tree.inclusion_proof(index)
    leaf = d[index]

    assert verify_inclusion(hasher, index, n, leaf, proof, root)
    assert root_from_inclusion_proof(hasher, index, n, leaf, proof) == root

    if proof:
        element = data.draw(st.integers(0, len(proof) - 1), label="flipped element")
        bit = data.draw(st.integers(0, 8 * hasher.digest_size - 1), label="flipped bit")
        flipped = list(proof)
        flipped[element] = flip_bit(proof[element], bit)
        assert not verify_inclusion(hasher, index, n, leaf, flipped, root)
        assert not verify_inclusion(hasher, index, n, leaf, proof[:-1], root)
        assert not verify_inclusion(hasher, index, n, leaf, proof[1:], root)
        short = list(proof)
        short[element] = proof[element][:-1]
        assert not verify_inclusion(hasher, index, n, leaf, short, root)
    bit = data.draw(st.integers(0, 8 * hasher.digest_size - 1), label="flipped bit")
    assert not verify_inclusion(hasher, index, n, flip_bit(leaf, bit), proof, root)
    assert not verify_inclusion(hasher, index, n, leaf, proof, flip_bit(root, bit))

    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra element")
    assert not verify_inclusion(hasher, index, n, leaf, [*proof, extra], root)
    assert not verify_inclusion(hasher, index, n, leaf, [extra, *proof], root)

    wrong_index = data.draw(st.integers(-2, n + 2).filter(lambda i: i != index), label="index")
    assert not verify_inclusion(hasher, wrong_index, n, leaf, proof, root)

    # The root does not commit to the size: a proof also verifies at another size exactly
    # when the path to the leaf has the same turns there (RFC 9162 leaves the size to the
    # signed tree head).  Every other size must fail.
    wrong_size = data.draw(st.integers(-1, 2 * n + 2).filter(lambda s: s != n), label="size")
    same_shape = inclusion_shape(index, wrong_size) == inclusion_shape(index, n)
    assert verify_inclusion(hasher, index, wrong_size, leaf, proof, root) == same_shape


@PROPERTY_SETTINGS
@given(hasher=hashers, n=st.integers(2, 300), salt=salts, data=st.data())
def test_consistency_proofs_verify_and_tampering_fails(
    hasher: Hasher, n: int, salt: bytes, data: st.DataObject
) -> None:
    tree = MerkleTree(hasher, leaf_hashes(hasher, n, salt))
    m = data.draw(st.integers(1, n - 1), label="old size")
    proof = tree.consistency_proof(m, n)
    old_root, new_root = tree.root(m), tree.root(n)

    assert proof
    assert verify_consistency(hasher, m, n, old_root, new_root, proof)

    element = data.draw(st.integers(0, len(proof) - 1), label="flipped element")
    bit = data.draw(st.integers(0, 8 * hasher.digest_size - 1), label="flipped bit")
    flipped = list(proof)
    flipped[element] = flip_bit(proof[element], bit)
    assert not verify_consistency(hasher, m, n, old_root, new_root, flipped)
    assert not verify_consistency(hasher, m, n, flip_bit(old_root, bit), new_root, proof)
    assert not verify_consistency(hasher, m, n, old_root, flip_bit(new_root, bit), proof)
    assert not verify_consistency(hasher, m, n, new_root, old_root, proof)

    assert not verify_consistency(hasher, m, n, old_root, new_root, [])
    assert not verify_consistency(hasher, m, n, old_root, new_root, proof[:-1])
    assert not verify_consistency(hasher, m, n, old_root, new_root, proof[1:])
    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra element")
    assert not verify_consistency(hasher, m, n, old_root, new_root, [*proof, extra])
    assert not verify_consistency(hasher, m, n, old_root, new_root, [extra, *proof])
    short = list(proof)
    short[element] = proof[element][:-1]
    assert not verify_consistency(hasher, m, n, old_root, new_root, short)

    wrong_old = data.draw(st.integers(-1, n + 2).filter(lambda s: s != m), label="old size")
    assert not verify_consistency(hasher, wrong_old, n, old_root, new_root, proof)

    # As with inclusion, the new root alone does not fix the new size: another size verifies
    # exactly when SUBPROOF takes the same turns there.  Every other size must fail.
    wrong_new = data.draw(st.integers(-1, 2 * n + 2).filter(lambda s: s != n), label="new size")
    same_shape = consistency_shape(m, wrong_new) == consistency_shape(m, n)
    assert verify_consistency(hasher, m, wrong_new, old_root, new_root, proof) == same_shape


@settings(max_examples=20, deadline=None)
@given(hasher=hashers, n=st.integers(1, 64))
def test_every_proof_of_a_small_tree_verifies(hasher: Hasher, n: int) -> None:
    d = leaf_hashes(hasher, n)
    tree = MerkleTree(hasher, d)
    for size in range(1, n + 1):
        root = tree.root(size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert verify_inclusion(hasher, index, size, d[index], proof, root)
        for old_size in range(0, size + 1):
            proof = tree.consistency_proof(old_size, size)
            assert verify_consistency(hasher, old_size, size, tree.root(old_size), root, proof)


# ---------------------------------------------------------------------------------------------
# Historical tree heads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hasher", [BLAKE3, SHA256], ids=lambda h: h.name)
def test_historical_roots_equal_roots_of_freshly_built_prefixes(hasher: Hasher) -> None:
    d = leaf_hashes(hasher, 130)
    grown = MerkleTree(hasher)
    for leaf in d:
        grown.append(leaf)
    for size in range(0, len(d) + 1):
        fresh = MerkleTree(hasher, d[:size])
        assert grown.root(size) == fresh.root(), size
        if size:
            index = size // 3
            assert grown.inclusion_proof(index, size) == fresh.inclusion_proof(index)
            assert grown.consistency_proof(size // 2, size) == fresh.consistency_proof(size // 2)


@settings(max_examples=40, deadline=None)
@given(hasher=hashers, n=st.integers(0, 200), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_tree_is_the_same_however_leaves_are_batched(
    hasher: Hasher, n: int, cuts: list[int]
) -> None:
    d = leaf_hashes(hasher, n)
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    batched = MerkleTree(hasher)
    for lo, hi in itertools.pairwise(bounds):
        batched.extend(d[lo:hi])
    one_by_one = MerkleTree(hasher)
    for leaf in d:
        one_by_one.append(leaf)
    assert batched.size == one_by_one.size == n
    for size in bounds:
        assert batched.root(size) == one_by_one.root(size) == ref_mth(hasher, d[:size])
    if n:
        assert batched.inclusion_proof(n - 1) == one_by_one.inclusion_proof(n - 1)


def test_appending_keeps_earlier_roots() -> None:
    d = leaf_hashes(BLAKE3, 40)
    tree = MerkleTree(BLAKE3)
    roots = []
    for leaf in d:
        roots.append(tree.root())
        tree.append(leaf)
    assert [tree.root(size) for size in range(len(d))] == roots


# ---------------------------------------------------------------------------------------------
# Edge cases and errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hasher", [BLAKE3, SHA256], ids=lambda h: h.name)
def test_empty_and_single_leaf_trees(hasher: Hasher) -> None:
    tree = MerkleTree(hasher)
    assert tree.size == 0
    assert len(tree) == 0
    assert tree.root() == hasher.empty_root()
    assert tree.consistency_proof(0) == []
    leaf = hasher.leaf_hash(b"only chunk")
    tree.append(leaf)
    assert tree.root() == leaf
    assert tree.inclusion_proof(0) == []
    assert verify_inclusion(hasher, 0, 1, leaf, [], leaf)
    assert tree.consistency_proof(0) == []
    assert tree.consistency_proof(1) == []


def test_tree_rejects_leaf_hashes_of_the_wrong_size() -> None:
    tree = MerkleTree(BLAKE3, leaf_hashes(BLAKE3, 3))
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append(b"\x00" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append("not bytes")  # type: ignore[arg-type]
    assert tree.size == 3
    assert tree.root() == MerkleTree(BLAKE3, leaf_hashes(BLAKE3, 3)).root()
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree(SHA256, [b"short"])
    good = BLAKE3.leaf_hash(b"good")
    with pytest.raises(ValueError, match=r"got 5 bytes \(leaf 4\)"):
        tree.extend([good, b"short", good])
    assert tree.size == 3


def test_tree_rejects_sizes_and_indices_outside_the_tree() -> None:
    tree = MerkleTree(SHA256, leaf_hashes(SHA256, 5))
    with pytest.raises(ValueError, match=r"size 6 is outside 0\.\.5"):
        tree.root(6)
    with pytest.raises(ValueError, match="outside"):
        tree.root(-1)
    with pytest.raises(ValueError, match="leaf index 5 is outside a tree of size 5"):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError, match="leaf index 3 is outside a tree of size 3"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ValueError, match="outside"):
        tree.inclusion_proof(-1)
    with pytest.raises(ValueError, match="outside"):
        tree.inclusion_proof(0, 0)
    with pytest.raises(ValueError, match=r"new size 9 is outside 0\.\.5"):
        tree.consistency_proof(1, 9)
    with pytest.raises(ValueError, match=r"old size 4 is outside 0\.\.3"):
        tree.consistency_proof(4, 3)
    with pytest.raises(ValueError, match="old size -1"):
        tree.consistency_proof(-1)


def test_root_from_inclusion_proof_explains_malformed_proofs() -> None:
    tree = MerkleTree(SHA256, leaf_hashes(SHA256, 5))
    leaf = leaf_hashes(SHA256, 5)[2]
    proof = tree.inclusion_proof(2)
    with pytest.raises(ValueError, match="too many"):
        root_from_inclusion_proof(SHA256, 2, 5, leaf, [*proof, proof[0]])
    with pytest.raises(ValueError, match="too few"):
        root_from_inclusion_proof(SHA256, 2, 5, leaf, proof[:-1])
    with pytest.raises(ValueError, match="element 1 must be 32 bytes"):
        root_from_inclusion_proof(SHA256, 2, 5, leaf, [proof[0], b"x"])
    with pytest.raises(ValueError, match="outside"):
        root_from_inclusion_proof(SHA256, 5, 5, leaf, proof)


JUNK: list[object] = [None, "text", 10**6, b"", b"\x00" * 31, b"\x00" * 33, [b"\x00" * 32]]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_verifiers_return_false_for_junk_instead_of_raising(junk: object) -> None:
    tree = MerkleTree(SHA256, leaf_hashes(SHA256, 6))
    leaf = leaf_hashes(SHA256, 6)[4]
    proof = tree.inclusion_proof(4)
    root = tree.root()
    old_root = tree.root(3)
    cproof = tree.consistency_proof(3)
    j = junk
    assert not verify_inclusion(SHA256, 4, 6, j, proof, root)  # type: ignore[arg-type]
    assert not verify_inclusion(SHA256, 4, 6, leaf, proof, j)  # type: ignore[arg-type]
    assert not verify_inclusion(SHA256, 4, 6, leaf, j, root)  # type: ignore[arg-type]
    assert not verify_inclusion(SHA256, 4, 6, leaf, [*proof[:-1], j], root)  # type: ignore[list-item]
    assert not verify_inclusion(SHA256, j, 6, leaf, proof, root)  # type: ignore[arg-type]
    assert not verify_inclusion(SHA256, 4, j, leaf, proof, root)  # type: ignore[arg-type]
    assert not verify_consistency(SHA256, 3, 6, j, root, cproof)  # type: ignore[arg-type]
    assert not verify_consistency(SHA256, 3, 6, old_root, j, cproof)  # type: ignore[arg-type]
    assert not verify_consistency(SHA256, 3, 6, old_root, root, j)  # type: ignore[arg-type]
    assert not verify_consistency(SHA256, 3, 6, old_root, root, [j, *cproof[1:]])  # type: ignore[list-item]
    assert not verify_consistency(SHA256, j, 6, old_root, root, cproof)  # type: ignore[arg-type]
    assert not verify_consistency(SHA256, 3, j, old_root, root, cproof)  # type: ignore[arg-type]


def test_verify_inclusion_rejects_nonsensical_indices_and_sizes() -> None:
    leaf = SHA256.leaf_hash(b"a")
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1), (0, -1)]:
        assert not verify_inclusion(SHA256, index, size, leaf, [], leaf)


def test_verify_consistency_edge_sizes() -> None:
    tree = MerkleTree(SHA256, leaf_hashes(SHA256, 4))
    empty = SHA256.empty_root()
    r1, r4 = tree.root(1), tree.root(4)
    # The empty tree is a prefix of every tree, with an empty proof and the empty root.
    assert verify_consistency(SHA256, 0, 0, empty, empty, [])
    assert verify_consistency(SHA256, 0, 4, empty, r4, [])
    assert not verify_consistency(SHA256, 0, 4, r1, r4, [])
    assert not verify_consistency(SHA256, 0, 0, empty, r1, [])
    assert not verify_consistency(SHA256, 0, 4, empty, r4, [empty])
    # Equal sizes need equal roots and an empty proof.
    assert verify_consistency(SHA256, 4, 4, r4, r4, [])
    assert not verify_consistency(SHA256, 4, 4, r1, r4, [])
    assert not verify_consistency(SHA256, 4, 4, r4, r4, [r4])
    # Time does not run backwards; sizes are not negative.
    assert not verify_consistency(SHA256, 4, 1, r4, r1, tree.consistency_proof(1, 4))
    assert not verify_consistency(SHA256, -1, 4, r1, r4, [])


# ---------------------------------------------------------------------------------------------
# A large tree (no timing assertions: benchmarks are scripts, not tests)
# ---------------------------------------------------------------------------------------------


def test_hundred_thousand_leaf_tree_gives_verifying_proofs() -> None:
    n = 100_000
    hasher = BLAKE3
    d = leaf_hashes(hasher, n)
    tree = MerkleTree(hasher, d)
    assert tree.size == n
    root = tree.root()
    for index in (0, 1, 65_535, 65_536, 99_998, n - 1):
        proof = tree.inclusion_proof(index)
        assert len(proof) == len(ref_path_shape(index, n))
        assert verify_inclusion(hasher, index, n, d[index], proof, root)
    for old_size in (1, 2, 3, 65_536, 77_777, n - 1):
        proof = tree.consistency_proof(old_size)
        assert verify_consistency(hasher, old_size, n, tree.root(old_size), root, proof)
    # A historical head of the big tree matches the same prefix built on its own.
    assert tree.root(1_000) == MerkleTree(hasher, d[:1_000]).root()


def ref_path_shape(index: int, n: int) -> list[str]:
    shape = inclusion_shape(index, n)
    assert shape is not None
    return shape
