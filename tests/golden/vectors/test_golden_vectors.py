"""The published verification vectors: current with their generators, and agreed by our code."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.cdr import Cdr
from cdr_mediation.domain.chain import ChainHead, record_hash, verify_chain
from cdr_mediation.domain.merkle import MerkleTree, merkle_root, verify_inclusion

HERE = Path(__file__).resolve().parent


def generator(folder: str) -> ModuleType:
    path = HERE / folder / "generate.py"
    spec = importlib.util.spec_from_file_location(f"{folder}_vectors_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(folder: str, name: str) -> Any:
    return json.loads((HERE / folder / name).read_text("utf-8"))


@pytest.mark.parametrize("folder", ["chain", "merkle"])
def test_files_are_exactly_what_the_generator_writes(folder: str) -> None:
    for name, text in generator(folder).build().items():
        assert (HERE / folder / name).read_text("utf-8") == text, (
            f"{folder}/{name} is stale: run python tests/golden/vectors/{folder}/generate.py"
        )


class TestChainVectors:
    doc = load("chain", "chain.json")

    def test_jcs_bytes_and_record_hashes(self) -> None:
        for item in self.doc["entries"]:
            assert canonical_bytes(item["entry"]).decode("utf-8") == item["jcs"]
            assert record_hash(item["entry"]) == item["record_hash"]

    def test_entries_are_exactly_cdr_entries(self) -> None:
        for item in self.doc["entries"]:
            assert Cdr.from_entry(item["entry"]).to_entry() == item["entry"]

    def test_the_chain_verifies_to_its_head(self) -> None:
        rows = [{**i["entry"], "record_hash": i["record_hash"]} for i in self.doc["entries"]]
        head = ChainHead("op-a", self.doc["head"]["chain_seq"], self.doc["head"]["head_hash"])
        result = verify_chain("op-a", rows, expected_head=head)
        assert result.ok and result.head == head

    @pytest.mark.parametrize(
        "case", load("chain", "tampered.json")["cases"], ids=lambda c: c["name"]
    )
    def test_tampered_chains_break_where_stated(self, case: dict[str, Any]) -> None:
        expected_head = case["expected_head"] and ChainHead(**case["expected_head"])
        result = verify_chain("op-a", case["rows"], expected_head=expected_head)
        fault = result.first_break
        assert fault is not None
        assert {"kind": fault.kind.value, "seq": fault.seq, "expected": fault.expected,
                "found": fault.found} == case["first_break"]


class TestMerkleVectors:
    doc = load("merkle", "merkle.json")

    def test_roots(self) -> None:
        for tree in self.doc["trees"]:
            assert merkle_root(self.doc["leaves"][: tree["size"]]) == tree["root"]

    def test_inclusion_proofs(self) -> None:
        for item in self.doc["inclusion_proofs"]:
            tree = MerkleTree(self.doc["leaves"][: item["tree_size"]])
            assert tree.root == item["root"]
            assert tree.inclusion_proof(item["leaf_index"]) == item["proof"]
            assert verify_inclusion(item["record_hash"], item["leaf_index"], item["tree_size"],
                                    item["proof"], item["root"])

    def test_tampered_proofs_fail(self) -> None:
        assert self.doc["tampered_proofs"]
        for item in self.doc["tampered_proofs"]:
            accepted = verify_inclusion(item["record_hash"], item["leaf_index"],
                                        item["tree_size"], item["proof"], item["root"])
            assert not accepted, item["what"]
