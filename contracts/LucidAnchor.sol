// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// @title LucidAnchor: write-once Merkle roots of recorded sessions.
/// @notice Lucid Sessions signs each session's manifest (and so its Merkle root) with the
/// cluster's Ed25519 key; this contract only proves *when* a root existed and that it was
/// never replaced. Each anchoring address has its own namespace of session ids, and an id
/// in it can be written once.
///
/// Why no owner, and why the sender is part of the key:
/// anyone may call `anchor`, so the contract needs no administration and cannot be locked
/// by losing an admin key. With a single global namespace that would be first-writer-wins:
/// whoever anchors an id first owns it for ever, and an attacker could claim our session
/// ids with a wrong root. Deriving the id from something secret-looking (a hash of our
/// public key fingerprint and the session id) does not help: the id is plain in our own
/// pending transaction, so a front-runner copies it from the mempool and outbids us.
/// Keying the record by `msg.sender` does help: nobody can write into our namespace
/// without our private key, so front-running or pre-claiming our ids is impossible, and
/// others' anchors in their own namespaces cannot disturb ours. A verifier therefore looks
/// a session up under the cluster's anchoring address (pinned, like its signing key).
///
/// `sessionId` is, by convention, sha256 of the UTF-8 session id; `root` is the 32-byte
/// Merkle root. A zero root is refused: it is what an unwritten record reads as.
contract LucidAnchor {
    struct Record {
        bytes32 root;
        uint64 time;
        uint64 blockNumber;
    }

    /// @notice The record of `sessionId` anchored by `by`; zeroes if none.
    /// The block number lets a client fetch the `Anchored` event without scanning the chain.
    mapping(address by => mapping(bytes32 sessionId => Record)) public records;

    /// @notice A root was anchored. Emitted exactly once per (by, sessionId).
    event Anchored(bytes32 indexed sessionId, bytes32 root, address indexed by, uint256 time);

    /// @notice `root` was zero.
    error ZeroRoot();

    /// @notice `by` already anchored `sessionId`, with `root`.
    error AlreadyAnchored(address by, bytes32 sessionId, bytes32 root);

    /// @notice Anchor `root` for `sessionId` in the caller's namespace; refuses a second
    /// anchor for the same id, whatever its root (a retry with the same root is recognised
    /// by the client through `rootOf` before it sends).
    function anchor(bytes32 sessionId, bytes32 root) external {
        if (root == bytes32(0)) revert ZeroRoot();
        Record storage record = records[msg.sender][sessionId];
        if (record.root != bytes32(0)) revert AlreadyAnchored(msg.sender, sessionId, record.root);
        record.root = root;
        record.time = uint64(block.timestamp);
        record.blockNumber = uint64(block.number);
        emit Anchored(sessionId, root, msg.sender, block.timestamp);
    }

    /// @notice The root `by` anchored for `sessionId` and the block time it was anchored
    /// at; both zero if it never was.
    function rootOf(address by, bytes32 sessionId) external view returns (bytes32 root, uint256 time) {
        Record storage record = records[by][sessionId];
        return (record.root, record.time);
    }
}
