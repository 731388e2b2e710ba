#!/usr/bin/env python3
"""Generate the inclusion-proof vectors in this folder (see README.md), byte for byte.

    python testdata/proofs/generate.py      # from the repository root; rewrites every file here

Everything is a function of the constants below: keys come from fixed labels (test keys, published
on purpose: they protect nothing), certificates have fixed serial numbers and validity, and both
signature schemes are deterministic — Ed25519 by definition (RFC 8032) and ECDSA with RFC 6979
nonces (`deterministic_signing`, cryptography >= 44 on OpenSSL >= 3.2), for the checkpoint and the
certificates alike. The entries, checkpoint and proof documents are built with cdr-mediation's own
domain code (what the portal serves); `tools/verify_proof.py`, which shares no code with it,
judges them, and tests/golden/test_proof_vectors.py holds the verdicts to manifest.json.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for cdr_mediation

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from cdr_mediation.domain.cdr import Cdr, DlrStatus, RecordType  # noqa: E402
from cdr_mediation.domain.chain import ChainHead, link  # noqa: E402
from cdr_mediation.domain.checkpoint import CheckpointBuilder  # noqa: E402
from cdr_mediation.domain.inclusion_proof import proof_from_record_hashes  # noqa: E402

OPERATOR = "op-vectors"
DAY = "2026-03-14"
FILE = {"file_name": "CDVECTRREGUL00042", "file_sequence": 42, "cut_off": "2026-03-15T00:00:00.000Z",
        "data_sha256": hashlib.sha256(b"stand-in for the file's TAP data (not part of these vectors)").hexdigest()}
ORGANISATION = "cdr-mediation proof vectors (TEST KEYS, PUBLISHED)"
VALIDITY = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc))
EXPIRED = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
ED25519_LEAF = 9  # the leaf proved with Ed25519: a CDR whose sender_id JCS must escape
P256_LEAF = 13  # the last of the 14 leaves, a VOID with non-ASCII text, proved with ECDSA P-256


# --- keys and certificates ------------------------------------------------------------------------

def _seed(label: str) -> bytes:
    return hashlib.sha256(f"cdr-mediation proof vectors: {label}".encode()).digest()


def ed25519_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(label))


def p256_key(label: str) -> ec.EllipticCurvePrivateKey:
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(int.from_bytes(_seed(label), "big") % (order - 1) + 1, ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(**granted: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: granted.get(name, False) for name in names})


def certificate(*, subject: str, key, issuer_name: str, issuer_key, serial: int, ca_path_length: int | None = None,
                validity=VALIDITY) -> x509.Certificate:
    """A CA certificate when `ca_path_length` is given, else a signing leaf like the exporter's."""
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(validity[0]).not_valid_after(validity[1])
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca_path_length is not None:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=ca_path_length), critical=True)
                   .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_usage(digital_signature=True, content_commitment=True), critical=True))
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return builder.sign(issuer_key, None)
    return builder.sign(issuer_key, hashes.SHA256(), ecdsa_deterministic=True)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def key_id(key) -> str:
    return hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def sign(key, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


# --- the file ----------------------------------------------------------------------------------------

def _cdr(n: int, done_at: str, **changes: Any) -> Cdr:
    values = dict(
        record_type=RecordType.CDR, cdr_id=f"00000000-0000-5000-8000-{n:012d}", dlr_id=f"vec-dlr-{n:04d}",
        message_id=f"vec-msg-{n:04d}", tenant_id="tenant-1", operator_id=OPERATOR, sender_id="ACME",
        msisdn=f"+49151000{n:05d}", status=DlrStatus.DELIVERED, submitted_at=done_at, done_at=done_at, segments=1,
        billable=True, unit_price_minor=5, amount_minor=5, tax_minor=1, currency="EUR",
        pricing_version="op-vectors/default/2026-01", error_code=None, smsc_id="smsc-vec-1", chain_seq=0,
        prev_hash="")
    values.update(changes)
    return Cdr(**values)


def chain_entries() -> list[tuple[dict, str]]:
    """The operator's chain around the day: 13 CDRs of DAY, at chain_seq 4 a late CDR of the day
    before (not in this file, so leaf indexes are not chain_seq offsets), then a VOID of the first
    CDR (in this file: it has the original's done_at)."""
    unlinked = []
    for n in range(1, 14):
        at = f"{DAY}T{8 + n:02d}:{(7 * n) % 60:02d}:{(11 * n) % 60:02d}.{(37 * n) % 1000:03d}Z"
        changes: dict[str, Any] = {}
        if n == 3:
            changes = dict(status=DlrStatus.UNDELIVERED, billable=False, amount_minor=0, tax_minor=0,
                           error_code="0x0000000b")
        if n == 10:  # the Ed25519 vector's entry: characters JCS must escape
            changes = dict(sender_id='Shop "A"\\1', segments=3, amount_minor=15, tax_minor=3)
        unlinked.append(_cdr(n, at, **changes))
        if n == 3:
            unlinked.append(_cdr(99, "2026-03-13T23:59:58.999Z"))
    first = unlinked[0]
    void = dict(first.to_entry(), record_type="VOID", cdr_id="00000000-0000-5000-8000-000000000100",
                amount_minor=0, tax_minor=0, ref_cdr_id=first.cdr_id, ticket_ref="INC-2026-0314/ü",
                actor="Zoë Ñúñez (billing)", chain_seq=0, prev_hash="")
    unlinked.append(Cdr.from_entry(void))
    head, linked = ChainHead.genesis(OPERATOR), []
    for cdr in unlinked:
        entry, digest = link(head, cdr)
        head = head.advance(entry, digest)
        linked.append((entry.to_entry(), digest))
    return linked


def file_records() -> tuple[list[tuple[dict, str]], bytes]:
    """The file's records in chain order and its checkpoint's (canonical, signed) bytes."""
    records = [(e, h) for e, h in chain_entries() if e["done_at"].startswith(DAY)]
    builder = CheckpointBuilder(OPERATOR, DAY)
    for entry, digest in records:
        builder.add(entry, digest)
    return records, builder.finish(**FILE).canonical_bytes()


# --- the documents -------------------------------------------------------------------------------

def text(doc: dict) -> str:
    """As `InclusionProof.to_json` writes a proof."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    ca_key = p256_key("root CA")
    intermediate_key = p256_key("intermediate CA")
    ed_key, p256_signer, other_key, forger_key = (ed25519_key("ed25519 signer"), p256_key("p256 signer"),
                                                 ed25519_key("another ed25519 key"), ed25519_key("forger"))
    root = certificate(subject="vectors root CA", key=ca_key, issuer_name="vectors root CA", issuer_key=ca_key,
                       serial=1, ca_path_length=1)
    intermediate = certificate(subject="vectors intermediate CA", key=intermediate_key,
                               issuer_name="vectors root CA", issuer_key=ca_key, serial=2, ca_path_length=0)
    ed_leaf = certificate(subject="export signing ed25519", key=ed_key, issuer_name="vectors root CA",
                          issuer_key=ca_key, serial=10)
    p256_leaf = certificate(subject="export signing p256", key=p256_signer, issuer_name="vectors intermediate CA",
                            issuer_key=intermediate_key, serial=11)
    other_leaf = certificate(subject="another export key", key=other_key, issuer_name="vectors root CA",
                             issuer_key=ca_key, serial=12)
    expired_leaf = certificate(subject="export signing ed25519 (expired 2020)", key=ed_key,
                               issuer_name="vectors root CA", issuer_key=ca_key, serial=13, validity=EXPIRED)
    forger_root = certificate(subject="vectors root CA", key=forger_key, issuer_name="vectors root CA",
                              issuer_key=forger_key, serial=1, ca_path_length=0)
    forger_leaf = certificate(subject="export signing ed25519", key=forger_key, issuer_name="vectors root CA",
                              issuer_key=forger_key, serial=10)

    records, checkpoint = file_records()
    hashes_in_order = [h for _, h in records]

    def proof(index: int, key, chain: list[x509.Certificate], profile: str) -> dict:
        entry, digest = records[index]
        made = proof_from_record_hashes(hashes_in_order, entry=entry, record_hash=digest, checkpoint=checkpoint,
                                        checkpoint_signature=sign(key, checkpoint), signing_profile=profile,
                                        key_id=key_id(key), certificates=[pem(c) for c in chain])
        assert made.leaf_index == index
        return json.loads(made.to_json())

    valid_ed = proof(ED25519_LEAF, ed_key, [ed_leaf], "ed25519")
    valid_p256 = proof(P256_LEAF, p256_signer, [p256_leaf, intermediate], "ecdsa-p256")

    def changed(base: dict, **members: Any) -> dict:
        doc = copy.deepcopy(base)
        doc.update(members)
        return doc

    def flip_hex(value: str, at: int = -1) -> str:
        position = at % len(value)
        return value[:position] + ("0" if value[position] != "0" else "1") + value[position + 1:]

    def flip_b64(value: str, at: int) -> str:
        raw = bytearray(base64.b64decode(value))
        raw[at] ^= 0x01
        return base64.b64encode(bytes(raw)).decode("ascii")

    def flip_checkpoint_root(value: str) -> str:
        """One byte of the signed bytes: the merkle_root's first hex digit, still a hex digit."""
        raw = base64.b64decode(value)
        at = raw.index(b'"merkle_root":"') + len(b'"merkle_root":"')
        digit = flip_hex(raw[at:at + 1].decode("ascii")).encode("ascii")
        return base64.b64encode(raw[:at] + digit + raw[at + 1:]).decode("ascii")

    def entry_changed(base: dict, rehash: bool) -> dict:
        doc = copy.deepcopy(base)
        doc["entry"]["amount_minor"] += 1
        if rehash:
            from cdr_mediation.domain.chain import record_hash
            doc["record_hash"] = record_hash(doc["entry"])
        return doc

    forged_signature = base64.b64encode(sign(forger_key, checkpoint)).decode("ascii")
    # name → (document, --ca or None, valid, failed check, what was done)
    vectors: list[tuple[str, dict, bool, bool, str | None, str]] = [
        ("valid-ed25519", valid_ed, True, True, None,
         "an Ed25519-signed file of 14 records; leaf 9, a CDR whose sender_id needs JCS escapes"),
        ("valid-ed25519", valid_ed, False, True, None, "the same without a trust anchor: valid, with a warning"),
        ("valid-ecdsa-p256", valid_p256, True, True, None,
         "the same file signed with ECDSA P-256 through an intermediate CA; leaf 13, a VOID with non-ASCII text"),
        ("tampered-entry-field", entry_changed(valid_ed, rehash=False), True, False, "record_hash",
         "entry.amount_minor + 1"),
        ("tampered-record-hash", changed(valid_ed, record_hash=flip_hex(valid_ed["record_hash"])), True, False,
         "record_hash", "last hex digit of record_hash changed"),
        ("tampered-entry-rehashed", entry_changed(valid_ed, rehash=True), True, False, "inclusion",
         "entry.amount_minor + 1 and record_hash recomputed: a consistent forgery the signed root exposes"),
        ("tampered-cdr-id", changed(valid_ed, cdr_id=valid_p256["cdr_id"]), True, False, "entry",
         "the proof's cdr_id names another CDR than its entry"),
        ("tampered-checkpoint-byte", changed(valid_ed, checkpoint=flip_checkpoint_root(valid_ed["checkpoint"])), True,
         False, "checkpoint_signature", "first hex digit of the checkpoint's merkle_root changed (one byte)"),
        ("tampered-checkpoint-byte-p256",
         changed(valid_p256, checkpoint=flip_checkpoint_root(valid_p256["checkpoint"])), True, False,
         "checkpoint_signature", "as tampered-checkpoint-byte, ECDSA P-256"),
        ("tampered-signature-byte", changed(valid_ed, checkpoint_signature=flip_b64(
            valid_ed["checkpoint_signature"], -1)), True, False, "checkpoint_signature",
         "last byte of the Ed25519 signature changed"),
        ("tampered-signature-byte-p256", changed(valid_p256, checkpoint_signature=flip_b64(
            valid_p256["checkpoint_signature"], -1)), True, False, "checkpoint_signature",
         "last byte of the ECDSA signature (in s) changed"),
        ("tampered-algorithm", changed(valid_ed, signature_algorithm="ecdsa-p256-sha256"), True, False,
         "checkpoint_signature", "signature_algorithm does not match the certificate's key"),
        ("wrong-certificate", changed(valid_ed, certificates=[pem(other_leaf)]), True, False,
         "checkpoint_signature", "the certificate of another key of the same CA"),
        ("tampered-key-id", changed(valid_ed, key_id=key_id(other_key)), True, False, "key_id",
         "key_id names another key"),
        ("tampered-tree-size", changed(valid_ed, tree_size=valid_ed["tree_size"] + 1), True, False, "checkpoint",
         "tree_size + 1"),
        ("tampered-file-name", changed(valid_ed, file_name="CDVECTRREGUL00043"), True, False, "checkpoint",
         "file_name of another file"),
        ("tampered-leaf-index", changed(valid_ed, leaf_index=valid_ed["leaf_index"] - 1), True, False, "inclusion",
         "leaf_index - 1"),
        ("tampered-audit-path", changed(valid_ed, audit_path=[valid_ed["audit_path"][0],
                                                              flip_hex(valid_ed["audit_path"][1], 0),
                                                              *valid_ed["audit_path"][2:]]), True, False,
         "inclusion", "first hex digit of audit_path[1] changed"),
        ("tampered-audit-path-short", changed(valid_ed, audit_path=valid_ed["audit_path"][:-1]), True, False,
         "inclusion", "last audit_path element dropped"),
        ("expired-certificate", changed(valid_ed, certificates=[pem(expired_leaf)]), True, False,
         "certificate_chain", "the signer's key in a certificate that expired before the cut-off"),
        ("untrusted-signer", changed(valid_ed, checkpoint_signature=forged_signature, key_id=key_id(forger_key),
                                     certificates=[pem(forger_leaf), pem(forger_root)]), True, False,
         "certificate_chain", "the checkpoint re-signed by a forger's key under a look-alike CA"),
        ("untrusted-signer", None, False, True, None,
         "the same without a trust anchor: it verifies, which is why --ca is required for trust"),
        ("unknown-format", changed(valid_ed, format="cdr-mediation.inclusion-proof.v2"), True, False, "document",
         "a format this verifier does not read"),
    ]
    files = {"ca.pem": pem(root)}
    manifest = []
    for name, doc, with_ca, valid, check, what in vectors:
        if doc is not None:
            files[f"{name}.proof.json"] = text(doc)
        manifest.append({"proof": f"{name}.proof.json", "ca": "ca.pem" if with_ca else None, "valid": valid,
                         "failed_check": check, "what": what})
    files["manifest.json"] = json.dumps({
        "format": "cdr-mediation.proof-vectors.v1",
        "verifier": "tools/verify_proof.py PROOF [--ca CA]: exit 0 if valid, else 1 with failed_check",
        "vectors": manifest,
    }, indent=2, ensure_ascii=False) + "\n"
    return files


def main() -> None:
    for name, content in build().items():
        (HERE / name).write_text(content, encoding="utf-8")


if __name__ == "__main__":
    main()
