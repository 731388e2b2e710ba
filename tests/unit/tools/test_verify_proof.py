"""tools/verify_proof.py, in process: its JCS subset equals the project's canonical JSON on the
values entries and checkpoints are made of, and every proof the domain model makes verifies."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cdr_mediation.codecs.canonical_json import canonical_bytes
from cdr_mediation.domain.inclusion_proof import proof_from_record_hashes
from cdr_mediation.infra.cms_verify import public_key_id
from tests.unit.codecs.test_canonical_json import cdr_entries, in_domain_json
from tests.unit.domain.test_inclusion_proof import day_file

_SPEC = importlib.util.spec_from_file_location(
    "verify_proof", Path(__file__).resolve().parents[3] / "tools" / "verify_proof.py")
verifier = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(verifier)


# --- the JCS subset -------------------------------------------------------------------------------

@settings(max_examples=1_000, deadline=None)
@given(cdr_entries())
def test_entries_serialise_exactly_as_the_chain_hashes_them(entry: dict[str, Any]) -> None:
    assert verifier.jcs(entry) == canonical_bytes(entry)
    # and as they travel: through a proof document's JSON text and back
    assert verifier.jcs(json.loads(json.dumps(entry, ensure_ascii=False))) == canonical_bytes(entry)


@settings(max_examples=1_000, deadline=None)
@given(in_domain_json)
def test_the_whole_subset_serialises_like_the_project(value: Any) -> None:
    assert verifier.jcs(value) == canonical_bytes(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=6))
def test_non_ascii_keys_sort_by_utf16_code_units(value: dict[str, int]) -> None:
    assert verifier.jcs(value) == canonical_bytes(value)


@pytest.mark.parametrize("value, reason", [
    (1.5, "floats are not supported"), ({"a": [0.0]}, "floats are not supported"),
    (2**53, "beyond"), (-(2**53), "beyond"), ("\ud800", "lone surrogate"), ({"\udc00": 1}, "lone surrogate"),
])
def test_values_outside_the_subset_are_refused_not_guessed(value, reason) -> None:
    with pytest.raises(verifier.NotCanonicalisable, match=reason):
        verifier.jcs(value)


# --- proofs made by the domain model --------------------------------------------------------------

def _identity(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit-test signer")])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2000, 1, 1)).not_valid_after(dt.datetime(2100, 1, 1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, algorithm))
    return cert, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("profile", ["ed25519", "ecdsa-p256"])
def test_every_leaf_of_files_of_many_sizes_verifies(profile: str) -> None:
    key = ed25519.Ed25519PrivateKey.generate() if profile == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    cert, pem = _identity(key)
    for size in (1, 2, 3, 5, 8, 11, 16, 17):
        records, checkpoint = day_file(size)
        signature = key.sign(checkpoint) if profile == "ed25519" else key.sign(checkpoint, ec.ECDSA(hashes.SHA256()))
        hashes_in_order = [h for _, h in records]
        for index, (entry, digest) in enumerate(records):
            proof = proof_from_record_hashes(hashes_in_order, entry=entry, record_hash=digest, checkpoint=checkpoint,
                                             checkpoint_signature=signature, signing_profile=profile,
                                             key_id=public_key_id(cert), certificates=[pem])
            verdict = verifier.verify(proof.to_json().encode(), [cert])
            assert verdict["valid"] and (verdict["leaf_index"], verdict["tree_size"]) == (index, size)
            assert verdict["trust_anchor"] == "CN=unit-test signer"


def test_a_proof_with_a_duplicate_member_is_not_read() -> None:
    text = (Path(__file__).resolve().parents[3] / "testdata" / "proofs" / "valid-ed25519.proof.json").read_text()
    duplicated = text.replace('"tree_size": 14', '"tree_size": 14,\n  "tree_size": 15')
    with pytest.raises(verifier.Failed) as failure:
        verifier.verify(duplicated.encode())
    assert failure.value.check == "document" and "twice" in failure.value.message


def test_the_checkpoint_must_be_its_own_canonical_form() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cert, pem = _identity(key)
    records, checkpoint = day_file(3)
    pretty = json.dumps(json.loads(checkpoint), indent=1).encode()  # same content, other bytes, signed
    doc = json.loads(proof_from_record_hashes(
        [h for _, h in records], entry=records[0][0], record_hash=records[0][1], checkpoint=checkpoint,
        checkpoint_signature=key.sign(checkpoint), signing_profile="ed25519", key_id=public_key_id(cert),
        certificates=[pem]).to_json())
    doc.update(checkpoint=base64.b64encode(pretty).decode(), checkpoint_signature=base64.b64encode(
        key.sign(pretty)).decode())
    with pytest.raises(verifier.Failed) as failure:
        verifier.verify(json.dumps(doc).encode(), [cert])
    assert (failure.value.check, failure.value.message) == ("checkpoint", "the checkpoint bytes are not their own "
                                                                          "RFC 8785 form")
    assert hashlib.sha256(pretty).digest() != hashlib.sha256(checkpoint).digest()


def test_an_error_answer_saved_instead_of_a_proof_is_named_as_such() -> None:
    answer = {"error": {"code": "not_signed", "message": "CDX00001 is BUILT: not signed yet"}}
    with pytest.raises(verifier.Failed) as failure:
        verifier.verify(json.dumps(answer).encode())
    assert failure.value.check == "document" and "error answer" in failure.value.message
    assert "not_signed" in failure.value.message
