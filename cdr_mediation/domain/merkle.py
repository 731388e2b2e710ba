"""RFC 6962 Merkle tree over chain record hashes (DESIGN.md §5; docs/chain.md §5).

Leaves are the records' ``record_hash`` values, each taken as its raw 32 bytes:

    MTH({})      = SHA-256("")                                    (empty export)
    leaf(h)      = SHA-256(0x00 ‖ h)
    node(l, r)   = SHA-256(0x01 ‖ l ‖ r)
    MTH(D[0:n])  = node(MTH(D[0:k]), MTH(D[k:n])), k = largest power of two < n   (RFC 6962 §2.1)

An inclusion proof is RFC 6962 §2.1.1's audit path (bottom-up sibling hashes), verified with the
algorithm of RFC 9162 §2.1.3.2. Hashes cross this API as lowercase hex strings.

The tree is built bottom-up (pair neighbours, carry an odd last node up unchanged), which yields
exactly the RFC 6962 tree (the tests compare it with the recursive definition) in O(n) hashing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _raw(hex_hash: str) -> bytes:
    if type(hex_hash) is not str or _HEX64.fullmatch(hex_hash) is None:
        raise ValueError("a hash must be 64 lowercase hex digits")
    return bytes.fromhex(hex_hash)


def leaf_hash(record_hash: str) -> bytes:
    return hashlib.sha256(b"\x00" + _raw(record_hash)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        upper.append(level[-1])
    return upper


def merkle_root(record_hashes: Sequence[str]) -> str:
    """RFC 6962 Merkle Tree Hash of the record hashes, in order (hex)."""
    if not record_hashes:
        return EMPTY_ROOT
    level = [leaf_hash(h) for h in record_hashes]
    while len(level) > 1:
        level = _next_level(level)
    return level[0].hex()


class MerkleAccumulator:
    """The RFC 6962 root of a sequence of record hashes fed one by one, in O(log n) memory.

    An export of ten million records must not hold ten million hashes (320 MB) to compute its
    root. The accumulator keeps the roots of the perfect subtrees of the leaves so far (at most
    one per height, heights decreasing left to right: the binary digits of the count); `root`
    folds them right to left, which is exactly the RFC 6962 split at the largest power of two.

    A part of a file built elsewhere (`start` > 0: its first leaf is leaf `start` of the file)
    keeps only subtrees that are subtrees of the whole file's tree: a node is formed only when
    its left sibling is a leaf or node of this part. Its `subtrees()` are then added, in order,
    to the accumulator of the leaves before `start` (`add_subtree`), which gives the root of
    the leaves added one by one — any `start`, any part length (the tests compare them).
    """

    __slots__ = ("_stack", "_size", "_start")

    def __init__(self, start: int = 0) -> None:
        if start < 0:
            raise ValueError("a part cannot start before the first leaf")
        self._stack: list[tuple[int, bytes]] = []  # (height, subtree root), contiguous, in leaf order
        self._size = 0
        self._start = start

    @property
    def size(self) -> int:
        """Leaves added (to this part)."""
        return self._size

    @property
    def start(self) -> int:
        return self._start

    def add(self, record_hash: str) -> None:
        self.add_leaf(leaf_hash(record_hash))

    def add_leaf(self, leaf: bytes) -> None:
        self._push(0, leaf)

    def add_subtree(self, height: int, node: bytes) -> None:
        """Add the root of a perfect subtree of 2**height leaves that follow the leaves so far.
        It must be a subtree of the file's tree: aligned on a multiple of its own width."""
        if height < 0 or (self._start + self._size) % (1 << height):
            raise ValueError(f"a subtree of height {height} cannot start at leaf {self._start + self._size}")
        self._push(height, node)

    def _push(self, height: int, node: bytes) -> None:
        stack = self._stack
        first = self._start + self._size  # index of the node's first leaf in the file
        self._size += 1 << height
        # The node is a right child when its index at its level is odd; its left sibling is then
        # the top of the stack, unless that sibling begins before this part.
        while stack and stack[-1][0] == height and (first >> height) & 1:
            node = node_hash(stack.pop()[1], node)
            first -= 1 << height
            height += 1
        stack.append((height, node))

    def subtrees(self) -> list[tuple[int, bytes]]:
        """(height, root) of the perfect subtrees covering this part's leaves, in leaf order."""
        return list(self._stack)

    def perfect_subtrees(self) -> list[bytes]:
        """Roots of the perfect subtrees covering the leaves so far, leftmost (highest) first."""
        return [node for _, node in self._stack]

    @property
    def root(self) -> str:
        if self._start:
            raise ValueError("a part that does not start at the first leaf has no root of its own")
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node.hex()


class MerkleTree:
    """All levels of the tree, for serving many inclusion proofs of one export."""

    __slots__ = ("_levels",)

    def __init__(self, record_hashes: Sequence[str]) -> None:
        levels = [[leaf_hash(h) for h in record_hashes]]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        self._levels = levels

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> str:
        return self._levels[-1][0].hex() if self.size else EMPTY_ROOT

    def inclusion_proof(self, index: int) -> list[str]:
        """RFC 6962 §2.1.1 PATH(index, D[n]): sibling hashes from the leaf up (hex)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of {self.size}")
        proof = []
        position = index
        for level in self._levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):  # else: this node is carried up unchanged
                proof.append(level[sibling].hex())
            position >>= 1
        return proof


def inclusion_proof(record_hashes: Sequence[str], index: int) -> list[str]:
    return MerkleTree(record_hashes).inclusion_proof(index)


def root_from_inclusion_proof(
    record_hash: str, index: int, tree_size: int, proof: Sequence[str]
) -> str | None:
    """RFC 9162 §2.1.3.2: the root the proof leads to, or None if the proof is malformed."""
    if not 0 <= index < tree_size:
        return None
    fn, sn = index, tree_size - 1
    r = leaf_hash(record_hash)
    for sibling_hex in proof:
        p = _raw(sibling_hex)
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r.hex()


def verify_inclusion(
    record_hash: str, index: int, tree_size: int, proof: Sequence[str], root: str
) -> bool:
    """True iff `proof` shows `record_hash` is leaf `index` of the tree (`tree_size`, `root`)."""
    return root_from_inclusion_proof(record_hash, index, tree_size, proof) == root


# --- Inclusion proofs from a stream of leaves ---------------------------------------------------


def audit_path_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose subtree hashes make up PATH(index, D[tree_size]),
    leaf level first (RFC 6962 §2.1.1 unrolled: at each split the sibling is the other half).

    The ranges and the leaf itself partition ``[0, tree_size)``; those left of the leaf are perfect
    subtrees, the binary digits of `index` (the `MerkleAccumulator` stack when the leaf arrives).
    """
    if not 0 <= index < tree_size:
        raise IndexError(f"leaf index {index} outside a tree of {tree_size}")
    top_down = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # largest power of two < hi - lo
        if index < lo + k:
            top_down.append((lo + k, hi))
            hi = lo + k
        else:
            top_down.append((lo, lo + k))
            lo += k
    return top_down[::-1]


class StreamingInclusionProof:
    """PATH(m, D[n]) of one leaf, from the tree's leaves fed once in order, in O(log n) memory.

    A file can hold tens of millions of records; holding their hashes (32 bytes each, twice for
    the tree levels) per proof request would not do. The leaf index `m` is not known in advance
    (it is the record's position among the file's records, found while streaming), so: until the
    marked leaf arrives, the running `MerkleAccumulator` keeps exactly the left siblings (the
    perfect subtrees of the leaves before it); from then on each right sibling range, known from
    (m, n), is accumulated on its own. `finish` also gives the root of everything fed, for the
    caller to compare with the signed one.
    """

    __slots__ = ("tree_size", "_all", "_index", "_left", "_right", "_right_at")

    def __init__(self, tree_size: int) -> None:
        if tree_size < 1:
            raise ValueError("an inclusion proof needs a tree of at least one leaf")
        self.tree_size = tree_size
        self._all = MerkleAccumulator()
        self._index: int | None = None
        self._left: list[bytes] = []  # left sibling hashes, highest subtree first
        self._right: list[tuple[int, int, MerkleAccumulator]] = []  # right sibling ranges, left to right
        self._right_at = 0

    @property
    def size(self) -> int:
        return self._all.size

    def add(self, record_hash: str, *, target: bool = False) -> None:
        position = self._all.size
        if position >= self.tree_size:
            raise ValueError(f"more than {self.tree_size} leaves fed")
        leaf = leaf_hash(record_hash)
        if target:
            if self._index is not None:
                raise ValueError(f"two target leaves: {self._index} and {position}")
            self._index = position
            self._left = self._all.perfect_subtrees()
            self._right = [(lo, hi, MerkleAccumulator())
                           for lo, hi in sorted(audit_path_ranges(position, self.tree_size)) if lo > position]
        elif self._index is not None:
            while self._right[self._right_at][1] <= position:
                self._right_at += 1
            self._right[self._right_at][2].add_leaf(leaf)
        self._all.add_leaf(leaf)

    def finish(self) -> tuple[int, list[str], str]:
        """(leaf index, audit path leaf level first as hex, root of all leaves fed)."""
        if self._all.size != self.tree_size:
            raise ValueError(f"{self._all.size} leaves fed, the tree has {self.tree_size}")
        if self._index is None:
            raise ValueError("the target leaf was never fed")
        left = iter(reversed(self._left))  # lowest subtree first, as the path climbs
        right = iter(self._right)
        path = []
        for lo, _ in audit_path_ranges(self._index, self.tree_size):
            if lo < self._index:
                path.append(next(left).hex())
            else:
                path.append(next(right)[2].root)
        return self._index, path, self._all.root
