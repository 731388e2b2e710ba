"""RFC 6962 Merkle tree over record hashes, checked against trees computed by hand."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.domain.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    MerkleTree,
    StreamingInclusionProof,
    audit_path_ranges,
    inclusion_proof,
    merkle_root,
    root_from_inclusion_proof,
    verify_inclusion,
)


def record(i: int) -> str:
    return hashlib.sha256(f"record-{i}".encode()).hexdigest()


def L(i: int) -> bytes:  # leaf hash, written out from RFC 6962 §2.1
    return hashlib.sha256(b"\x00" + bytes.fromhex(record(i))).digest()


def N(left: bytes, right: bytes) -> bytes:  # interior node hash
    return hashlib.sha256(b"\x01" + left + right).digest()


RECORDS = [record(i) for i in range(7)]


class TestRootsByHand:
    def test_empty_tree_is_the_hash_of_the_empty_string(self) -> None:
        assert merkle_root([]) == EMPTY_ROOT == (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )

    def test_one_leaf(self) -> None:
        assert merkle_root(RECORDS[:1]) == L(0).hex()

    def test_leaf_hash_uses_the_raw_32_bytes_not_the_hex_text(self) -> None:
        assert merkle_root(RECORDS[:1]) != hashlib.sha256(b"\x00" + RECORDS[0].encode()).hexdigest()

    @pytest.mark.parametrize(
        ("size", "root"),
        [
            (2, lambda: N(L(0), L(1))),
            (3, lambda: N(N(L(0), L(1)), L(2))),
            (4, lambda: N(N(L(0), L(1)), N(L(2), L(3)))),
            (5, lambda: N(N(N(L(0), L(1)), N(L(2), L(3))), L(4))),
            (6, lambda: N(N(N(L(0), L(1)), N(L(2), L(3))), N(L(4), L(5)))),
            (7, lambda: N(N(N(L(0), L(1)), N(L(2), L(3))), N(N(L(4), L(5)), L(6)))),
        ],
    )
    def test_small_trees_split_at_the_largest_power_of_two(self, size: int, root) -> None:
        assert merkle_root(RECORDS[:size]) == root().hex()
        assert MerkleTree(RECORDS[:size]).root == root().hex()

    def test_order_matters(self) -> None:
        assert merkle_root(RECORDS[:2]) != merkle_root(RECORDS[1::-1])


class TestRfc6962Example:
    """The seven-leaf tree of RFC 6962 §2.1.3, with its names."""

    a, b, c, d, e, f, j = (L(i) for i in range(7))
    g, h, i = N(a, b), N(c, d), N(e, f)
    k, l = N(g, h), N(i, j)
    root = N(k, l).hex()

    @pytest.mark.parametrize(
        ("index", "path"),
        [(0, "b h l"), (3, "c g l"), (4, "f j k"), (6, "i k")],
    )
    def test_audit_paths(self, index: int, path: str) -> None:
        expected = [getattr(self, name).hex() for name in path.split()]
        assert inclusion_proof(RECORDS, index) == expected
        assert verify_inclusion(RECORDS[index], index, 7, expected, self.root)

    def test_every_leaf_is_provable(self) -> None:
        tree = MerkleTree(RECORDS)
        assert tree.root == self.root
        for index, leaf in enumerate(RECORDS):
            assert verify_inclusion(leaf, index, 7, tree.inclusion_proof(index), self.root)


class TestRejectedProofs:
    proof = inclusion_proof(RECORDS, 3)
    root = merkle_root(RECORDS)

    def test_other_record_at_that_position(self) -> None:
        assert not verify_inclusion(record(99), 3, 7, self.proof, self.root)

    def test_tampered_proof_element(self) -> None:
        bad = list(self.proof)
        bad[1] = ("0" if bad[1][0] != "0" else "1") + bad[1][1:]
        assert not verify_inclusion(RECORDS[3], 3, 7, bad, self.root)

    def test_wrong_index(self) -> None:
        assert not verify_inclusion(RECORDS[3], 2, 7, self.proof, self.root)

    def test_proof_too_short_or_too_long(self) -> None:
        assert root_from_inclusion_proof(RECORDS[3], 3, 7, self.proof[:-1]) is None
        assert root_from_inclusion_proof(RECORDS[3], 3, 7, self.proof + [record(0)]) is None

    def test_index_outside_the_tree(self) -> None:
        assert not verify_inclusion(RECORDS[3], 7, 7, self.proof, self.root)
        assert not verify_inclusion(RECORDS[3], -1, 7, self.proof, self.root)
        with pytest.raises(IndexError):
            inclusion_proof(RECORDS, 7)

    def test_wrong_root(self) -> None:
        assert not verify_inclusion(RECORDS[3], 3, 7, self.proof, merkle_root(RECORDS[:6]))

    @pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "zz" * 32, b"\x00" * 32])
    def test_hashes_must_be_64_lowercase_hex(self, bad) -> None:
        with pytest.raises(ValueError):
            merkle_root([bad])


# --- the recursive definition of RFC 6962 §2.1 / §2.1.1, written independently -------------

def naive_root(leaves: list[str]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + bytes.fromhex(leaves[0])).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return N(naive_root(leaves[:k]), naive_root(leaves[k:]))


def naive_path(m: int, leaves: list[str]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_root(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_root(leaves[:k])]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=70), st.data())
def test_agrees_with_the_recursive_definition(leaves: list[str], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    assert root == naive_root(leaves).hex()
    if not leaves:
        return
    tree = MerkleTree(leaves)
    assert tree.root == root
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.inclusion_proof(index)
    assert proof == [h.hex() for h in naive_path(index, leaves)]
    assert verify_inclusion(leaves[index], index, len(leaves), proof, root)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        tampered = list(proof)
        tampered[position] = hashlib.sha256(bytes.fromhex(tampered[position])).hexdigest()
        assert not verify_inclusion(leaves[index], index, len(leaves), tampered, root)


class TestAccumulator:
    """The streaming root an export computes (O(log n) memory) equals the tree's root."""

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=140))
    def test_every_prefix_has_the_recursive_root(self, leaves: list[str]) -> None:
        accumulator = MerkleAccumulator()
        assert accumulator.root == EMPTY_ROOT
        for n, leaf in enumerate(leaves, start=1):
            accumulator.add(leaf)
            assert (accumulator.size, accumulator.root) == (n, naive_root(leaves[:n]).hex())

    def test_memory_stays_logarithmic(self) -> None:
        accumulator = MerkleAccumulator()
        for i in range(5_000):
            accumulator.add(record(i))
        assert accumulator.root == merkle_root([record(i) for i in range(5_000)])
        assert len(accumulator._stack) == bin(5_000).count("1")

    def test_a_changed_or_reordered_leaf_changes_the_root(self) -> None:
        def root_of(hashes):
            accumulator = MerkleAccumulator()
            for h in hashes:
                accumulator.add(h)
            return accumulator.root

        assert root_of(RECORDS) != root_of([*RECORDS[:3], RECORDS[4], RECORDS[3], *RECORDS[5:]])
        assert root_of(RECORDS) != root_of([*RECORDS[:6], record(99)])


class TestStreamingInclusionProof:
    """The path a proof request computes while streaming a file's hashes once equals PATH(m, D[n])."""

    @staticmethod
    def stream(leaves: list[str], target: int) -> tuple[int, list[str], str]:
        proof = StreamingInclusionProof(len(leaves))
        for position, leaf in enumerate(leaves):
            proof.add(leaf, target=position == target)
        return proof.finish()

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), min_size=1, max_size=140), st.data())
    def test_agrees_with_the_recursive_definition(self, leaves: list[str], data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(leaves) - 1))
        assert self.stream(leaves, index) == (index, [h.hex() for h in naive_path(index, leaves)],
                                              naive_root(leaves).hex())

    def test_every_leaf_of_small_trees(self) -> None:
        for size in range(1, 34):
            leaves = [record(i) for i in range(size)]
            tree = MerkleTree(leaves)
            for index in range(size):
                assert self.stream(leaves, index) == (index, tree.inclusion_proof(index), tree.root)

    def test_ranges_and_the_leaf_partition_the_tree(self) -> None:
        for size in range(1, 40):
            for index in range(size):
                ranges = audit_path_ranges(index, size)
                covered = sorted([(index, index + 1), *ranges])
                assert [lo for lo, _ in covered] == [0, *[hi for _, hi in covered[:-1]]] and covered[-1][1] == size
                assert [hi - lo for lo, hi in ranges if hi <= index] == sorted(
                    hi - lo for lo, hi in ranges if hi <= index)  # left siblings grow as the path climbs

    def test_memory_stays_logarithmic(self) -> None:
        proof = StreamingInclusionProof(5_000)
        for i in range(5_000):
            proof.add(record(i), target=i == 1_234)
            assert len(proof._left) + len(proof._right) <= 2 * 13  # ⌈log2 5000⌉ siblings at most
        index, path, root = proof.finish()
        assert (index, len(path)) == (1_234, 13) and root == merkle_root([record(i) for i in range(5_000)])

    def test_refuses_a_stream_that_is_not_the_tree(self) -> None:
        proof = StreamingInclusionProof(3)
        proof.add(record(0))
        proof.add(record(1))
        with pytest.raises(ValueError, match="2 leaves fed, the tree has 3"):
            proof.finish()
        proof.add(record(2))
        with pytest.raises(ValueError, match="never fed"):
            proof.finish()
        with pytest.raises(ValueError, match="more than 3"):
            proof.add(record(3))
        twice = StreamingInclusionProof(2)
        twice.add(record(0), target=True)
        with pytest.raises(ValueError, match="two target leaves"):
            twice.add(record(1), target=True)


class TestAccumulatorParts:
    """A file's root from two parts built apart (a large export is built by two processes):
    the later part keeps only subtrees of the whole tree, the earlier part adds them."""

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), min_size=1, max_size=140), st.data())
    def test_any_split_gives_the_root_of_the_whole(self, leaves: list[str], data: st.DataObject) -> None:
        split = data.draw(st.integers(0, len(leaves)))
        earlier, later = MerkleAccumulator(), MerkleAccumulator(start=split)
        for leaf in leaves[:split]:
            earlier.add(leaf)
        for leaf in leaves[split:]:
            later.add(leaf)
        for height, node in later.subtrees():
            earlier.add_subtree(height, node)
        assert (earlier.size, earlier.root) == (len(leaves), naive_root(leaves).hex())

    def test_a_later_parts_subtrees_are_aligned_in_the_whole_tree(self) -> None:
        later = MerkleAccumulator(start=5)
        for i in range(5, 21):
            later.add(record(i))
        # leaves 5 | 6-7 | 8-15 | 16-19 | 20: each a node of the tree of 21 leaves
        assert [height for height, _ in later.subtrees()] == [0, 1, 3, 2, 0]

    def test_a_subtree_off_its_alignment_and_a_parts_own_root_are_refused(self) -> None:
        accumulator = MerkleAccumulator()
        accumulator.add(RECORDS[0])
        with pytest.raises(ValueError, match="cannot start at leaf 1"):
            accumulator.add_subtree(1, bytes(32))
        part = MerkleAccumulator(start=3)
        part.add(RECORDS[0])
        with pytest.raises(ValueError, match="no root of its own"):
            part.root
