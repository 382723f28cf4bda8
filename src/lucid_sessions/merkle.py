"""Merkle trees over chunk hashes, with RFC 9162 inclusion and consistency proofs.

A session's stored chunks are the leaves of a Merkle tree shaped exactly as in RFC 9162
(Certificate Transparency v2), section 2.1.  With SHA-256 selected, every root and proof this
module produces is byte for byte what a Certificate Transparency log would produce for the same
leaves; BLAKE3 (the default) changes only the hash function, never the shape.

Glossary
--------
H
    The tree's hash function: BLAKE3 with a 32-byte digest (default) or SHA-256.  Chosen
    with :func:`get_hasher`; every hash in a tree, proof and root is ``digest_size`` bytes.
leaf hash
    ``H(0x00 || leaf)``, where the leaf is a stored chunk's bytes.  Trees are built from leaf
    hashes (:meth:`Hasher.leaf_hash`), never from the leaves themselves.
node hash
    ``H(0x01 || left || right)``.  The distinct prefixes keep a leaf from passing as a node.
root (MTH)
    The Merkle tree hash of ``n`` leaves ``D[0:n]``: ``H("")`` (the empty string) when
    ``n == 0``; the leaf hash when ``n == 1``; otherwise, with ``k`` the largest power of two
    smaller than ``n``, ``node_hash(MTH(D[0:k]), MTH(D[k:n]))``.
tree head
    A pair (size, root).  The root does not commit to the size on its own: a proof for one
    size can verify against the same root at another size whose tree has the same shape along
    the proven path.  Take sizes only from an authenticated source (the signed manifest).
historical tree head
    The root of the first ``size`` leaves of a longer tree, :meth:`MerkleTree.root` (size).

Proof formats
-------------
Both proofs are plain lists of hashes, each exactly ``digest_size`` bytes, in the RFC's order.

inclusion proof (audit path)
    RFC 9162 2.1.3.1 ``PATH(m, D[0:n])`` for the leaf at index ``m`` of a tree of size ``n``:
    the sibling hashes on the way from the leaf up to the root, the leaf's sibling first and
    the root's child last.  Empty for a one-leaf tree.  :func:`verify_inclusion` checks it
    with the algorithm of RFC 9162 2.1.3.2.
consistency proof
    RFC 9162 2.1.4.1 ``PROOF(m, D[0:n])`` showing that the tree of size ``m`` is a prefix of
    the tree of size ``n``, deepest node first.  Empty when ``m == n`` or ``m == 0`` (the RFC
    defines proofs for ``0 < m < n`` only; the empty tree is a prefix of every tree).
    :func:`verify_consistency` checks it with the algorithm of RFC 9162 2.1.4.2.

Verifiers return ``False`` for anything malformed (a proof of the wrong length, an element of
the wrong size, a size that makes no sense) and never raise on such input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from blake3 import blake3

from lucid_sessions.errors import InvalidConfigError

__all__ = [
    "HASH_ALGORITHMS",
    "Hasher",
    "MerkleTree",
    "get_hasher",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def _blake3_digest(*parts: bytes) -> bytes:
    # Fed part by part: a leaf (a whole stored chunk) is never copied to prepend its
    # prefix, and BLAKE3 releases the GIL on large inputs.
    hasher = blake3(parts[0])
    for part in parts[1:]:
        hasher.update(part)
    return hasher.digest()


def _sha256_digest(*parts: bytes) -> bytes:
    hasher = hashlib.sha256(parts[0])
    for part in parts[1:]:
        hasher.update(part)
    return hasher.digest()


_DIGESTS: dict[str, Callable[..., bytes]] = {
    "blake3": _blake3_digest,
    "sha256": _sha256_digest,
}

HASH_ALGORITHMS: tuple[str, ...] = tuple(_DIGESTS)
"""Names accepted by :func:`get_hasher`; the first is the default."""


@dataclass(frozen=True)
class Hasher:
    """The RFC 9162 leaf and node hashing rules over one hash function.

    Guarantees: every method returns exactly ``digest_size`` bytes; a leaf hash never equals a
    node hash unless the underlying hash function has a collision (distinct 0x00 and 0x01
    prefixes); two hashers compare equal exactly when they use the same algorithm.
    """

    name: str
    """``"blake3"`` or ``"sha256"``."""
    digest_size: int = field(init=False, default=32)
    """Length in bytes of every hash, root and proof element."""
    _digest: Callable[..., bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digest = _DIGESTS.get(self.name)
        if digest is None:
            raise _unknown_algorithm(self.name)
        object.__setattr__(self, "_digest", digest)

    def leaf_hash(self, data: bytes) -> bytes:
        """``H(0x00 || data)``: the hash of one leaf."""
        return self._digest(_LEAF_PREFIX, data)

    def node_hash(self, left: bytes, right: bytes) -> bytes:
        """``H(0x01 || left || right)``: the hash of an interior node."""
        return self._digest(_NODE_PREFIX, left, right)

    def empty_root(self) -> bytes:
        """``H("")``: the root of a tree with no leaves."""
        return self._digest(b"")


def _unknown_algorithm(name: object) -> InvalidConfigError:
    return InvalidConfigError(
        f"unknown Merkle hash algorithm {name!r}; expected one of {', '.join(HASH_ALGORITHMS)}",
        details={"algorithm": repr(name), "supported": list(HASH_ALGORITHMS)},
    )


def get_hasher(name: str = "blake3") -> Hasher:
    """The :class:`Hasher` for ``name`` (``"blake3"`` or ``"sha256"``).

    Raises :class:`~lucid_sessions.errors.InvalidConfigError`, naming the algorithm, for any
    other name.
    """
    if not isinstance(name, str) or name not in _DIGESTS:
        raise _unknown_algorithm(name)
    return Hasher(name)


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over leaf hashes, with historical tree heads.

    Every complete perfect subtree (``2**h`` leaves starting at a multiple of ``2**h``) has
    its hash computed once, when its last leaf is appended, and kept.  So appending is
    amortised O(1) (building ``n`` leaves is O(n)), and :meth:`root`, :meth:`inclusion_proof`
    and :meth:`consistency_proof` cost O(log n) hash operations for any size up to
    :attr:`size`.  Memory is about ``2 * n * digest_size`` bytes.

    Appending never changes the root or proofs of an earlier size.  Not safe for concurrent
    use: callers serialise appends against every other call.
    """

    __slots__ = ("_digest_size", "_hasher", "_levels", "_size")

    def __init__(self, hasher: Hasher, leaf_hashes: Iterable[bytes] = ()) -> None:
        """A tree holding ``leaf_hashes`` in order (hashes made with ``hasher.leaf_hash``).

        Raises ``ValueError`` if a leaf hash is not ``hasher.digest_size`` bytes.
        """
        self._hasher = hasher
        self._digest_size = hasher.digest_size
        # _levels[h] holds the hashes of the complete perfect subtrees of height h, left to
        # right, concatenated; _levels[0] holds the leaf hashes.
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def hasher(self) -> Hasher:
        """The hasher every node of this tree is computed with."""
        return self._hasher

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"MerkleTree(hasher={self._hasher.name!r}, size={self._size})"

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash at index :attr:`size`.

        Raises ``ValueError`` (and leaves the tree unchanged) if ``leaf_hash`` is not
        ``hasher.digest_size`` bytes.
        """
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append each leaf hash in order.

        All or nothing: raises ``ValueError`` (and leaves the tree unchanged) if any leaf hash
        is not ``hasher.digest_size`` bytes.
        """
        d = self._digest_size
        batch = bytearray()
        count = 0
        for leaf_hash in leaf_hashes:
            if not isinstance(leaf_hash, bytes | bytearray) or len(leaf_hash) != d:
                raise ValueError(
                    f"a leaf hash must be {d} bytes, got {_describe(leaf_hash)} "
                    f"(leaf {self._size + count})"
                )
            batch += leaf_hash
            count += 1
        if count:
            self._add_leaves(batch, count)

    def _add_leaves(self, batch: bytearray, count: int) -> None:
        """Store ``count`` validated leaf hashes and every perfect subtree they complete."""
        d = self._digest_size
        digest = self._hasher._digest
        levels = self._levels
        old, new = self._size, self._size + count
        levels[0] += batch
        height = 0
        # Level h + 1 gains the parents with indices (old >> h+1) .. (new >> h+1) - 1; once a
        # level gains none, no level above it does.
        while (new >> (height + 1)) > (old >> (height + 1)):
            parents = bytearray()
            with memoryview(levels[height]) as children:
                for i in range(old >> (height + 1), new >> (height + 1)):
                    parents += digest(_NODE_PREFIX + children[2 * i * d : (2 * i + 2) * d])
            height += 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += parents
        self._size = new

    def root(self, size: int | None = None) -> bytes:
        """The RFC 9162 root of the first ``size`` leaves (default: all of them).

        ``root(0)`` is ``hasher.empty_root()``.  Raises ``ValueError`` unless
        ``0 <= size <= self.size``.
        """
        n = self._check_size(size, "size")
        if n == 0:
            return self._hasher.empty_root()
        return self._range_hash(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.3.1 ``PATH(index, D[0:size])``: leaf's sibling first, root's child last.

        Raises ``ValueError`` unless ``0 <= index < size <= self.size``.
        """
        n = self._check_size(size, "size")
        if not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"leaf index {index!r} is outside a tree of size {n}")
        path: list[bytes] = []
        start, end = 0, n
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if index < start + k:
                path.append(self._range_hash(start + k, end))
                end = start + k
            else:
                path.append(self._range_hash(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.4.1 ``PROOF(old_size, D[0:new_size])``, deepest node first.

        Empty when ``old_size`` is 0 or equals ``new_size``.  Raises ``ValueError`` unless
        ``0 <= old_size <= new_size <= self.size``.
        """
        n = self._check_size(new_size, "new size")
        if not isinstance(old_size, int) or not 0 <= old_size <= n:
            raise ValueError(f"old size {old_size!r} is outside 0..{n} (the new size)")
        if old_size in (0, n):
            return []
        # SUBPROOF(m, D[start:end], b), unrolled: m counts leaves from start.
        proof: list[bytes] = []
        start, end, m, complete = 0, n, old_size, True
        while m != end - start:
            k = _largest_power_of_two_below(end - start)
            if m <= k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start += k
                m -= k
                complete = False
        if not complete:
            proof.append(self._range_hash(start, end))
        proof.reverse()
        return proof

    def _check_size(self, size: int | None, what: str) -> int:
        if size is None:
            return self._size
        if not isinstance(size, int) or not 0 <= size <= self._size:
            raise ValueError(f"{what} {size!r} is outside 0..{self._size} (the tree size)")
        return size

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC recursion reaches (``start < end``).

        Such a range starts at a multiple of the smallest power of two >= its length, so it
        splits into perfect subtrees of strictly decreasing size, all of them cached; the RFC
        root is their right fold.
        """
        d = self._digest_size
        pieces: list[bytes] = []
        while start < end:
            height = (end - start).bit_length() - 1
            index = start >> height
            buf = self._levels[height]
            pieces.append(bytes(buf[index * d : (index + 1) * d]))
            start += 1 << height
        acc = pieces.pop()
        while pieces:
            acc = self._hasher.node_hash(pieces.pop(), acc)
        return acc


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


def _as_digest(hasher: Hasher, value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != hasher.digest_size:
        raise ValueError(f"{what} must be {hasher.digest_size} bytes, got {_describe(value)}")
    return bytes(value)


def root_from_inclusion_proof(
    hasher: Hasher, index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` implies for ``leaf_hash`` at ``index`` in a tree of ``size``.

    RFC 9162 2.1.3.2 without the final comparison.  Raises ``ValueError`` if the proof cannot
    be one for that index and size (``index`` not in ``0..size-1``, wrong number of elements,
    an element or the leaf hash not ``hasher.digest_size`` bytes).
    """
    if not isinstance(index, int) or not isinstance(size, int) or not 0 <= index < size:
        raise ValueError(f"leaf index {index!r} is outside a tree of size {size!r}")
    r = _as_digest(hasher, leaf_hash, "leaf hash")
    path = [_as_digest(hasher, p, f"inclusion proof element {i}") for i, p in enumerate(proof)]
    fn, sn = index, size - 1
    for p in path:
        if sn == 0:
            raise ValueError(f"inclusion proof has too many elements ({len(path)})")
        if fn & 1 or fn == sn:
            r = hasher.node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hasher.node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError(f"inclusion proof has too few elements ({len(path)})")
    return r


def verify_inclusion(
    hasher: Hasher,
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 2.1.3.2.  Returns ``False``, never raises, for malformed input of any kind.
    """
    try:
        expected = _as_digest(hasher, root, "root")
        return root_from_inclusion_proof(hasher, index, size, leaf_hash, proof) == expected
    except (TypeError, ValueError):
        return False


def verify_consistency(
    hasher: Hasher,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """Whether ``proof`` shows the tree (``old_size``, ``old_root``) is a prefix of
    (``new_size``, ``new_root``).

    For ``0 < old_size < new_size`` this is RFC 9162 2.1.4.2 exactly.  The RFC leaves the
    other sizes undefined; here ``old_size == new_size`` holds iff the proof is empty and the
    roots are equal, and ``old_size == 0`` holds iff the proof is empty and ``old_root`` is
    ``hasher.empty_root()`` (and so is ``new_root`` when ``new_size`` is 0 too).  Returns
    ``False``, never raises, for malformed input of any kind.
    """
    try:
        return _verify_consistency(hasher, old_size, new_size, old_root, new_root, proof)
    except (TypeError, ValueError):
        return False


def _verify_consistency(
    hasher: Hasher,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    if not isinstance(old_size, int) or not isinstance(new_size, int):
        return False
    if not 0 <= old_size <= new_size:
        return False
    first_hash = _as_digest(hasher, old_root, "old root")
    second_hash = _as_digest(hasher, new_root, "new root")
    path = [_as_digest(hasher, c, f"consistency proof element {i}") for i, c in enumerate(proof)]
    if old_size == 0:
        empty = hasher.empty_root()
        return not path and first_hash == empty and (new_size > 0 or second_hash == empty)
    if old_size == new_size:
        return not path and first_hash == second_hash
    # RFC 9162 2.1.4.2, steps 1-7.
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hasher.node_hash(c, fr)
            sr = hasher.node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hasher.node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0
