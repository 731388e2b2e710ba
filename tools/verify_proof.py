#!/usr/bin/env python3
"""Check a cdr-mediation inclusion proof offline: python3 verify_proof.py PROOF.json [--ca CA.pem]

A proof (format "cdr-mediation.inclusion-proof.v1", docs/proofs.md) shows that one CDR, exactly as
stated, is a record of a signed daily export file. This script is the reference check and the
procedure docs/proofs.md §3 writes out: it needs Python 3.9+ and the `cryptography` package only,
and shares no code with cdr-mediation, so that a mistake in the system cannot hide itself here.

Checks, in this order; the first that fails is reported:

  document             the proof is well-formed JSON with exactly the v1 members and types
  record_hash          SHA-256 of the RFC 8785 (JCS) bytes of `entry` is `record_hash`
  entry                the entry's cdr_id / operator_id are the proof's
  checkpoint_signature the signature over the checkpoint bytes verifies with the first certificate
  key_id               `key_id` is SHA-256 of that certificate's SubjectPublicKeyInfo
  checkpoint           the signed checkpoint is canonical, of this operator and file, counts
                       `tree_size` records and spans the entry's chain_seq (an entry of another
                       day than the file's is carried by it: "carried" in the verdict)
  certificate_chain    (only with --ca) the certificate chains to the trust anchor, every
                       certificate valid at the checkpoint's cut_off
  inclusion            the audit path leads from the record hash to the checkpoint's merkle_root
                       (RFC 9162 §2.1.3.2)

Exit 0 and a JSON verdict on stdout if every check passes; exit 1, a JSON verdict naming the
failed check on stdout and one line on stderr if one fails; exit 2 if the files cannot be read.

Without --ca the signature is only checked against the certificate the proof itself carries, which
anyone can make: give the trust anchor you received from the operator out of band.

JCS subset: JSON values made of objects, arrays, strings, integers within +-(2**53 - 1),
true, false and null (all a chain entry and a checkpoint contain). A float anywhere, or a string
with a lone surrogate, is refused rather than canonicalised (see docs/proofs.md §5).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PROOF_FORMAT = "cdr-mediation.inclusion-proof.v1"
CHECKPOINT_FORMAT = "cdr-mediation.checkpoint.v1"
CHECKS = ("document", "record_hash", "entry", "checkpoint_signature", "key_id", "checkpoint",
          "certificate_chain", "inclusion")
MEMBERS = {"format": str, "cdr_id": str, "operator_id": str, "file_name": str, "entry": dict, "record_hash": str,
           "leaf_index": int, "tree_size": int, "audit_path": list, "checkpoint": str, "checkpoint_signature": str,
           "signature_algorithm": str, "key_id": str, "certificates": list}
ALGORITHMS = ("ed25519", "ecdsa-p256-sha256")
MAX_PATH_LENGTH = 8  # certificates from the signer to the anchor
JCS_INT_MAX = 2**53 - 1
HEX64 = re.compile(r"[0-9a-f]{64}")
CUT_OFF = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?")


class Failed(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check, self.message = check, message


# --- RFC 8785 (JCS), the subset entries and checkpoints use --------------------------------------

class NotCanonicalisable(ValueError):
    pass


def jcs(value) -> bytes:
    """RFC 8785 serialisation of a JSON value of the subset above, as UTF-8 bytes."""
    try:
        return _jcs(value).encode("utf-8")
    except UnicodeEncodeError:
        raise NotCanonicalisable("a string holds a lone surrogate, which has no UTF-8 form") from None


def _jcs(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        if abs(value) > JCS_INT_MAX:  # RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles
            raise NotCanonicalisable(f"integer {value} is beyond +-(2**53 - 1)")
        return str(value)
    if type(value) is str:
        return _jcs_string(value)
    if type(value) is list:
        return "[" + ",".join(_jcs(item) for item in value) + "]"
    if type(value) is dict:
        # §3.2.3: members sorted by their names' UTF-16 code units (UTF-16BE bytes sort alike).
        names = sorted(value, key=lambda name: name.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_jcs_string(name) + ":" + _jcs(value[name]) for name in names) + "}"
    raise NotCanonicalisable(f"a {type(value).__name__} value is outside the subset (floats are not supported)")


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _jcs_string(text: str) -> str:
    # §3.2.2.2: escape only '"', '\' and U+0000..U+001F (short forms where JSON has them,
    # else \u00xx in lowercase hex); everything else, '/' and non-ASCII included, as it is.
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


# --- Strict JSON reading -------------------------------------------------------------------------

def _object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a member name appears twice in one object")
    return obj


def _constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes):
    """UTF-8 JSON; duplicate member names and NaN/Infinity refused (parsers disagree on them)."""
    return json.loads(data.decode("utf-8"), object_pairs_hook=_object, parse_constant=_constant)


# --- RFC 6962 / RFC 9162 -------------------------------------------------------------------------

def root_from_inclusion_proof(record_hash: str, index: int, size: int, path: list) -> bytes:
    """RFC 9162 §2.1.3.2 with leaf = SHA-256(0x00 || raw record hash); raises Failed."""
    if not 0 <= index < size:
        raise Failed("inclusion", f"leaf_index {index} is not below tree_size {size}")
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + bytes.fromhex(record_hash)).digest()
    for element in path:
        p = bytes.fromhex(element)
        if sn == 0:
            raise Failed("inclusion", f"the audit path is longer than a tree of {size} needs")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("inclusion", f"the audit path is shorter than a tree of {size} needs")
    return r


# --- The checks ----------------------------------------------------------------------------------

def _b64(name: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Failed("document", f"{name} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text or not raw:
        raise Failed("document", f"{name} is not canonical, non-empty base64 (RFC 4648 §4, padded)")
    return raw


def check_document(data: bytes) -> dict:
    try:
        doc = strict_json(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Failed("document", f"not strict UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Failed("document", "not a JSON object")
    if set(doc) == {"error"}:  # the portal's answer when it has no proof to give
        raise Failed("document", f"not a proof but an error answer: {json.dumps(doc['error'], sort_keys=True)}")
    if doc.get("format") != PROOF_FORMAT:
        raise Failed("document", f"format is {doc.get('format')!r}, this script reads {PROOF_FORMAT!r}")
    if set(doc) != set(MEMBERS):
        missing, unknown = sorted(set(MEMBERS) - set(doc)), sorted(set(doc) - set(MEMBERS))
        raise Failed("document", f"members differ from v1: missing {missing}, unknown {unknown}")
    for name, kind in MEMBERS.items():
        if type(doc[name]) is not kind:
            raise Failed("document", f"{name} must be a JSON {kind.__name__}")
    for name in ("record_hash", "key_id"):
        if not HEX64.fullmatch(doc[name]):
            raise Failed("document", f"{name} must be 64 lowercase hex digits")
    if doc["leaf_index"] < 0 or doc["tree_size"] < 1:
        raise Failed("document", "leaf_index must be >= 0 and tree_size >= 1")
    if not all(type(h) is str and HEX64.fullmatch(h) for h in doc["audit_path"]):
        raise Failed("document", "audit_path must be a list of 64-lowercase-hex-digit hashes")
    if doc["signature_algorithm"] not in ALGORITHMS:
        raise Failed("document", f"signature_algorithm must be one of {ALGORITHMS}")
    doc["checkpoint_bytes"] = _b64("checkpoint", doc["checkpoint"])
    doc["signature_bytes"] = _b64("checkpoint_signature", doc["checkpoint_signature"])
    if not doc["certificates"] or not all(type(pem) is str and PEM.fullmatch(pem) for pem in doc["certificates"]):
        raise Failed("document", "certificates must be a non-empty list of single PEM certificates")
    try:
        doc["parsed_certificates"] = [x509.load_pem_x509_certificate(pem.encode("ascii"))
                                      for pem in doc["certificates"]]
    except ValueError as exc:
        raise Failed("document", f"a certificate cannot be read: {exc}") from None
    return doc


def check_record_hash(doc: dict) -> None:
    try:
        digest = hashlib.sha256(jcs(doc["entry"])).hexdigest()
    except (NotCanonicalisable, RecursionError) as exc:
        raise Failed("record_hash", f"the entry cannot be canonicalised: {exc}") from None
    if digest != doc["record_hash"]:
        raise Failed("record_hash", f"SHA-256 of the entry's JCS bytes is {digest}, not record_hash "
                                    f"{doc['record_hash']}: the entry or the hash was altered")


def check_entry(doc: dict) -> None:
    for name in ("cdr_id", "operator_id"):
        if doc["entry"].get(name) != doc[name]:
            raise Failed("entry", f"the entry's {name} is {doc['entry'].get(name)!r}, the proof's {doc[name]!r}")


def check_signature(doc: dict) -> None:
    signer = doc["parsed_certificates"][0]
    key, algorithm = signer.public_key(), doc["signature_algorithm"]
    try:
        if algorithm == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise Failed("checkpoint_signature", f"ed25519 signature, but the certificate holds a "
                                                     f"{type(key).__name__}")
            key.verify(doc["signature_bytes"], doc["checkpoint_bytes"])
        else:
            if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
                raise Failed("checkpoint_signature", f"ecdsa-p256-sha256 signature, but the certificate holds a "
                                                     f"{type(key).__name__}")
            key.verify(doc["signature_bytes"], doc["checkpoint_bytes"], ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Failed("checkpoint_signature", f"the {algorithm} signature over the checkpoint bytes does not verify "
                                             f"with the key of {signer.subject.rfc4514_string()}") from None


def spki_sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def check_key_id(doc: dict) -> None:
    actual = spki_sha256(doc["parsed_certificates"][0])
    if actual != doc["key_id"]:
        raise Failed("key_id", f"key_id is {doc['key_id']}, the certificate's key is {actual}")


def check_checkpoint(doc: dict) -> dict:
    raw = doc["checkpoint_bytes"]
    try:
        checkpoint = strict_json(raw)
        canonical = jcs(checkpoint)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Failed("checkpoint", f"the checkpoint is not JSON of the JCS subset: {exc}") from None
    if canonical != raw:
        raise Failed("checkpoint", "the checkpoint bytes are not their own RFC 8785 form")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise Failed("checkpoint", f"the checkpoint is not a {CHECKPOINT_FORMAT!r} object")
    entry = doc["entry"]
    first, last, seq = checkpoint.get("first_chain_seq"), checkpoint.get("last_chain_seq"), entry.get("chain_seq")
    done_at = entry.get("done_at")
    statements = [
        ("operator_id", checkpoint.get("operator_id") == doc["operator_id"], doc["operator_id"]),
        ("file_name", checkpoint.get("file_name") == doc["file_name"], doc["file_name"]),
        ("record_count", checkpoint.get("record_count") == doc["tree_size"], f"tree_size {doc['tree_size']}"),
        # An entry of another day is one the file carries: it reached the chain after its own
        # day's file closed (an adjustment, a late CDR; docs/proofs.md §3). Inclusion proves it.
        ("day", type(done_at) is str and type(checkpoint.get("day")) is str, f"the entry's done_at {done_at}"),
        ("first_chain_seq/last_chain_seq", all(type(v) is int for v in (first, last, seq)) and first <= seq <= last,
         f"the entry's chain_seq {seq}"),
        ("merkle_root", type(checkpoint.get("merkle_root")) is str and HEX64.fullmatch(checkpoint["merkle_root"]),
         "64 lowercase hex digits"),
        ("cut_off", type(checkpoint.get("cut_off")) is str and CUT_OFF.fullmatch(checkpoint["cut_off"]),
         "a UTC time YYYY-MM-DDTHH:MM:SS.mmmZ"),
    ]
    for name, holds, wanted in statements:
        if not holds:
            stated = {k: checkpoint.get(k) for k in name.split("/")}
            raise Failed("checkpoint", f"the signed checkpoint states {stated}, which does not fit {wanted}")
    return checkpoint


def cut_off_time(checkpoint: dict) -> datetime:
    y, mo, d, h, mi, s, ms = (int(g) for g in CUT_OFF.fullmatch(checkpoint["cut_off"]).groups())
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=timezone.utc)
    except ValueError as exc:
        raise Failed("checkpoint", f"cut_off {checkpoint['cut_off']} is not a time: {exc}") from None


def check_certificate_chain(doc: dict, anchors: list, at: datetime) -> x509.Certificate:
    """RFC 5280 path validation, the parts a signing chain needs: each certificate signed by the
    next, the last by a trust anchor; all valid at `at`; issuers are CAs allowed to sign
    certificates, within their path length; the signer may sign; no unknown critical extension."""
    path = [doc["parsed_certificates"][0]]
    pool = doc["parsed_certificates"][1:]
    while path[-1] not in anchors:
        issuer = next((a for a in anchors if _issued(path[-1], a)), None) or \
            next((c for c in pool if c not in path and _issued(path[-1], c)), None)
        if issuer is None:
            raise Failed("certificate_chain", f"no path from {path[-1].subject.rfc4514_string()} (issuer "
                                              f"{path[-1].issuer.rfc4514_string()}) to the trust anchor")
        path.append(issuer)
        if len(path) > MAX_PATH_LENGTH:
            raise Failed("certificate_chain", f"certification path longer than {MAX_PATH_LENGTH}")
    for depth, certificate in enumerate(path):
        _check_certificate(certificate, depth, at)
    return path[-1]


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)  # issuer name, then the signature
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _extension(certificate: x509.Certificate, kind):
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_certificate(certificate: x509.Certificate, depth: int, at: datetime) -> None:
    name = certificate.subject.rfc4514_string()
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise Failed("certificate_chain", f"{name} is not valid at the cut-off {at.isoformat()} (valid "
                                          f"{certificate.not_valid_before_utc.isoformat()} to "
                                          f"{certificate.not_valid_after_utc.isoformat()})")
    for extension in certificate.extensions:
        if extension.critical and extension.oid not in (x509.BasicConstraints.oid, x509.KeyUsage.oid):
            raise Failed("certificate_chain", f"{name} has an unsupported critical extension "
                                              f"{extension.oid.dotted_string}")
    usage = _extension(certificate, x509.KeyUsage)
    if depth == 0:
        if usage is not None and not (usage.digital_signature or usage.content_commitment):
            raise Failed("certificate_chain", f"{name} may not sign (key usage)")
        return
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise Failed("certificate_chain", f"{name} issued a certificate but is not a CA")
    if usage is not None and not usage.key_cert_sign:
        raise Failed("certificate_chain", f"{name} may not sign certificates (key usage)")
    if constraints.path_length is not None and depth - 1 > constraints.path_length:
        raise Failed("certificate_chain", f"{name} allows {constraints.path_length} intermediates below it, "
                                          f"the path has {depth - 1}")


def check_inclusion(doc: dict, checkpoint: dict) -> None:
    root = root_from_inclusion_proof(doc["record_hash"], doc["leaf_index"], doc["tree_size"], doc["audit_path"])
    if root.hex() != checkpoint["merkle_root"]:
        raise Failed("inclusion", f"the audit path leads to {root.hex()}, the signed merkle_root is "
                                  f"{checkpoint['merkle_root']}")


def verify(data: bytes, anchors: list | None = None) -> dict:
    """The verdict of a proof's bytes; raises Failed at the first check that does not hold."""
    doc = check_document(data)
    check_record_hash(doc)
    check_entry(doc)
    check_signature(doc)
    check_key_id(doc)
    checkpoint = check_checkpoint(doc)
    anchor = check_certificate_chain(doc, anchors, cut_off_time(checkpoint)) if anchors else None
    check_inclusion(doc, checkpoint)
    verdict = {
        "valid": True,
        "checks": [c for c in CHECKS if anchors or c != "certificate_chain"],
        "cdr_id": doc["cdr_id"], "operator_id": doc["operator_id"], "file_name": doc["file_name"],
        "chain_seq": doc["entry"].get("chain_seq"), "record_hash": doc["record_hash"],
        "leaf_index": doc["leaf_index"], "tree_size": doc["tree_size"], "merkle_root": checkpoint["merkle_root"],
        "cut_off": checkpoint["cut_off"], "signature_algorithm": doc["signature_algorithm"], "key_id": doc["key_id"],
        "file_day": checkpoint["day"], "carried": checkpoint["day"] != doc["entry"]["done_at"][:10],
        "signer": doc["parsed_certificates"][0].subject.rfc4514_string(),
        "trust_anchor": anchor.subject.rfc4514_string() if anchor is not None else None,
    }
    if anchor is None:
        verdict["warning"] = ("no --ca given: the signature was checked against the proof's own certificate, "
                              "which anyone can make; check it against the trust anchor you were given")
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a cdr-mediation inclusion proof offline (docs/proofs.md).")
    parser.add_argument("proof", help="the proof document (JSON), or - for standard input")
    parser.add_argument("--ca", help="PEM file of the trust anchor(s) the signing certificate must chain to")
    args = parser.parse_args(argv)
    try:
        data = sys.stdin.buffer.read() if args.proof == "-" else open(args.proof, "rb").read()
        anchors = x509.load_pem_x509_certificates(open(args.ca, "rb").read()) if args.ca else None
    except (OSError, ValueError) as exc:
        print(f"verify_proof: cannot read the input: {exc}", file=sys.stderr)
        return 2
    try:
        verdict = verify(data, anchors)
    except Failed as failure:
        print(json.dumps({"valid": False, "failed_check": failure.check, "message": failure.message}, sort_keys=True))
        print(f"INVALID: {failure.check}: {failure.message}", file=sys.stderr)
        return 1
    print(json.dumps(verdict, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
