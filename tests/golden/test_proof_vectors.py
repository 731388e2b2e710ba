"""The published inclusion-proof vectors (testdata/proofs/): current with their generator, and
judged by the standalone verifier, run as a regulator runs it, exactly as manifest.json says."""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rfc8785

from cdr_mediation.domain.inclusion_proof import parse_checkpoint

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "testdata" / "proofs"
VERIFIER = REPO / "tools" / "verify_proof.py"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text("utf-8"))


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _deterministic_ecdsa() -> bool:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        ec.derive_private_key(1, ec.SECP256R1()).sign(b"x", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except Exception:  # noqa: BLE001 - TypeError (cryptography < 44) or UnsupportedAlgorithm (OpenSSL < 3.2)
        return False
    return True


@pytest.mark.skipif(not _deterministic_ecdsa(), reason="RFC 6979 ECDSA needs cryptography >= 44 on OpenSSL >= 3.2")
def test_files_are_exactly_what_the_generator_writes() -> None:
    written = _module(VECTORS / "generate.py", "proof_vectors_generator").build()
    assert sorted(written) == sorted(p.name for p in VECTORS.iterdir() if p.name != "generate.py" and p.is_file()
                                     and p.name != "README.md")
    for name, text in written.items():
        assert (VECTORS / name).read_text("utf-8") == text, f"{name} is stale: run python testdata/proofs/generate.py"


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: f"{v['proof']}{'+ca' if v['ca'] else ''}")
def test_the_standalone_verifier_gives_the_manifest_verdict(vector: dict, tmp_path: Path) -> None:
    # -I: no user site, no PYTHONPATH, no script directory on the path; run from elsewhere.
    args = [sys.executable, "-I", str(VERIFIER), str(VECTORS / vector["proof"])]
    if vector["ca"]:
        args += ["--ca", str(VECTORS / vector["ca"])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is vector["valid"], result.stdout + result.stderr
    if vector["valid"]:
        assert result.returncode == 0 and result.stderr == ""
        assert (verdict["trust_anchor"] is not None) is (vector["ca"] is not None)
        assert ("warning" in verdict) is (vector["ca"] is None)
    else:
        assert result.returncode == 1
        assert verdict["failed_check"] == vector["failed_check"], verdict["message"]
        assert result.stderr.startswith(f"INVALID: {vector['failed_check']}: ")


def test_every_check_has_a_vector_that_fails_it_and_every_file_is_listed() -> None:
    checks = _module(VERIFIER, "verify_proof_for_checks").CHECKS
    failing = {v["failed_check"] for v in MANIFEST["vectors"] if not v["valid"]}
    assert failing == set(checks)
    listed = {v["proof"] for v in MANIFEST["vectors"]}
    assert listed == {p.name for p in VECTORS.glob("*.proof.json")}
    for kind in ("ed25519", "ecdsa-p256"):
        assert any(v["valid"] and v["ca"] and kind in v["proof"] for v in MANIFEST["vectors"])


@pytest.mark.parametrize("name", ["valid-ed25519.proof.json", "valid-ecdsa-p256.proof.json"])
def test_valid_vectors_agree_with_the_reference_jcs_and_our_checkpoint_reader(name: str) -> None:
    doc = json.loads((VECTORS / name).read_text("utf-8"))
    assert hashlib.sha256(rfc8785.dumps(doc["entry"])).hexdigest() == doc["record_hash"]
    checkpoint = parse_checkpoint(base64.b64decode(doc["checkpoint"]))
    assert (checkpoint.file_name, checkpoint.record_count) == (doc["file_name"], doc["tree_size"])


def test_a_broken_input_is_a_usage_error_not_a_verdict(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, "-I", str(VERIFIER), str(tmp_path / "nothing.json")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stdout == "" and "cannot read" in missing.stderr
    (tmp_path / "junk.pem").write_text("not a certificate")
    bad_ca = subprocess.run([sys.executable, "-I", str(VERIFIER), str(VECTORS / "valid-ed25519.proof.json"),
                             "--ca", str(tmp_path / "junk.pem")], capture_output=True, text=True, timeout=60)
    assert bad_ca.returncode == 2


def test_the_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(VERIFIER.read_text("utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}
