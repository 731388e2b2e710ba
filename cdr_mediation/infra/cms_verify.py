"""Independent verification of detached CMS signatures and checkpoint signatures.

Written from the RFCs (5652 CMS, 8419 Ed25519 in CMS, 5753/5758 ECDSA in CMS, 5280 paths), not
from the builder: it must not import `infra/cms.py` or share code with it, because a mistake
shared by a signer and its own verifier would pass every test and fail at the regulator. It uses
asn1crypto to parse and `cryptography` for the mathematics, and nothing from the HSM. This is
the procedure an auditor can re-implement from docs/signing.md; OpenSSL 3.0 cannot verify an
Ed25519 CMS, so for that profile this module is the reference check.

Accepted: one SignerInfo, detached id-data content, signed attributes content-type,
message-digest and signing-time (each once, one value), DER-encoded as RFC 5652 §5.3 requires;
Ed25519 with SHA-512 or ECDSA P-256 with SHA-256. Certificates are checked at the signing time
(the file's cut-off), from the signer up to one of the caller's trust anchors.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Sequence

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"
REQUIRED_ATTRIBUTES = (ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNING_TIME)


@dataclass(frozen=True)
class _Profile:
    name: str
    digest_oid: str
    digest: str  # hashlib name


# signatureAlgorithm OID → what it requires of the digest and the key.
PROFILES = {
    "1.3.101.112": _Profile("ed25519", "2.16.840.1.101.3.4.2.3", "sha512"),  # RFC 8419 §3.1
    "1.2.840.10045.4.3.2": _Profile("ecdsa-p256", "2.16.840.1.101.3.4.2.1", "sha256"),  # ecdsa-with-SHA256
}
MAX_PATH_LENGTH = 8  # certificates from signer to anchor; real chains have 2–4
_READ_SIZE = 1 << 20  # content file read size (`verify_detached_file`)


class VerificationError(ValueError):
    """The signature, its attributes or its certificates do not hold; the message says which."""


@dataclass(frozen=True)
class VerifiedSignature:
    profile: str  # "ed25519" or "ecdsa-p256"
    signer: x509.Certificate
    path: tuple[x509.Certificate, ...]  # signer first, trust anchor last
    signing_time: datetime  # UTC, as signed (the file's cut-off)
    message_digest: bytes

    @property
    def signer_name(self) -> str:
        return self.signer.subject.rfc4514_string()


def load_trust_anchors(pem: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise VerificationError(f"trust anchors: {exc}") from None


def verify_detached(cms_der: bytes, content: bytes, trust_anchors: Sequence[x509.Certificate]) -> VerifiedSignature:
    """Check a DER ContentInfo(SignedData) over `content`; raise VerificationError on any mismatch."""
    return _checked(cms_der, lambda name: hashlib.new(name, content).digest(), trust_anchors)


def verify_detached_file(cms_der: bytes, path: Path, trust_anchors: Sequence[x509.Certificate]) -> VerifiedSignature:
    """`verify_detached` over a file's bytes, read in chunks: an export of gigabytes never sits in memory."""
    def file_digest(name: str) -> bytes:
        digest = hashlib.new(name)
        with open(path, "rb") as source:
            for block in iter(lambda: source.read(_READ_SIZE), b""):
                digest.update(block)
        return digest.digest()

    return _checked(cms_der, file_digest, trust_anchors)


def verify_detached_signer(cms_der: bytes, trust_anchors: Sequence[x509.Certificate]) -> VerifiedSignature:
    """Everything `verify_detached` checks except the content's digest: the SignedData's form, the
    signature over the signed attributes and the signer's certification path to a trust anchor at
    the signing time. For evidence kept without its content (an export step records the CMS, not
    the ZIP): the signer is then a certificate the trust anchor vouches for, and the returned
    `message_digest` is what the content must hash to with the profile's digest."""
    return _checked(cms_der, None, trust_anchors)


def _checked(cms_der: bytes, content_digest: Callable[[str], bytes] | None,
             trust_anchors: Sequence[x509.Certificate]) -> VerifiedSignature:
    try:
        return _verify(cms_der, content_digest, tuple(trust_anchors))
    except VerificationError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto parses lazily: malformed input surfaces here
        raise VerificationError(f"malformed CMS: {type(exc).__name__}: {exc}") from None


def _verify(cms_der: bytes, content_digest: Callable[[str], bytes] | None,
            anchors: tuple[x509.Certificate, ...]) -> VerifiedSignature:
    """`content_digest(hashlib name)` is the content's digest with the algorithm the signature names
    (None: the content is not at hand and its digest is not checked)."""
    if not anchors:
        raise VerificationError("no trust anchor given")
    content_info = cms.ContentInfo.load(cms_der, strict=True)
    if content_info["content_type"].dotted != ID_SIGNED_DATA:
        raise VerificationError(f"content type is {content_info['content_type'].dotted}, not signed-data")
    signed_data = content_info["content"]
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].dotted != ID_DATA:
        raise VerificationError(f"encapsulated content type is {encapsulated['content_type'].dotted}, not id-data")
    if encapsulated["content"].native is not None:
        raise VerificationError("the SignedData encapsulates its content; a detached signature was expected")
    if len(signed_data["signer_infos"]) != 1:
        raise VerificationError(f"{len(signed_data['signer_infos'])} SignerInfos; exactly one expected")
    signer_info = signed_data["signer_infos"][0]

    bag = [x509.load_der_x509_certificate(choice.chosen.dump())
           for choice in signed_data["certificates"] if choice.name == "certificate"]
    signer = _signer_certificate(signer_info["sid"], signed_data["certificates"])
    profile = _profile(signer_info, signer)

    to_be_signed, attributes = _signed_attributes(signer_info)
    content_type = attributes[ID_CONTENT_TYPE]
    if content_type.dotted != encapsulated["content_type"].dotted:
        raise VerificationError(f"content-type attribute {content_type.dotted} differs from the encapsulated type")
    message_digest = attributes[ID_MESSAGE_DIGEST].native
    if content_digest is not None and message_digest != content_digest(profile.digest):
        raise VerificationError(f"message-digest attribute does not match the content's {profile.digest} "
                                f"(content altered, or signature made over other content)")
    signing_time = attributes[ID_SIGNING_TIME].native
    if not isinstance(signing_time, datetime):
        raise VerificationError("signing-time attribute is not a time")

    if not _signature_holds(signer.public_key(), profile.name, signer_info["signature"].native, to_be_signed):
        raise VerificationError("signature over the signed attributes does not verify with the signer certificate")
    path = certification_path(signer, bag, anchors, at=signing_time)
    return VerifiedSignature(profile.name, signer, path, signing_time, message_digest)


def _signer_certificate(sid: cms.SignerIdentifier, certificates: cms.CertificateSet) -> x509.Certificate:
    """The one certificate the SignerInfo names (issuer and serial number, or subject key id)."""
    matches = []
    for choice in certificates:
        if choice.name != "certificate":
            continue
        certificate = choice.chosen
        if sid.name == "issuer_and_serial_number":
            named = (certificate.issuer == sid.chosen["issuer"]
                     and certificate.serial_number == sid.chosen["serial_number"].native)
        else:
            named = certificate.key_identifier == sid.chosen.native
        if named:
            matches.append(certificate)
    if len(matches) != 1:
        raise VerificationError(f"{len(matches)} certificates in the SignedData match the signer identifier; "
                                "exactly one expected")
    return x509.load_der_x509_certificate(matches[0].dump())


def _profile(signer_info: cms.SignerInfo, signer: x509.Certificate) -> _Profile:
    algorithm = signer_info["signature_algorithm"]
    profile = PROFILES.get(algorithm["algorithm"].dotted)
    if profile is None:
        raise VerificationError(f"signature algorithm {algorithm['algorithm'].dotted} is neither Ed25519 "
                                "nor ecdsa-with-SHA256")
    if not isinstance(algorithm["parameters"], core.Void):
        raise VerificationError(f"{profile.name} signature algorithm must have absent parameters (RFC 8410/5758)")
    digest = signer_info["digest_algorithm"]["algorithm"].dotted
    if digest != profile.digest_oid:
        raise VerificationError(f"digest algorithm {digest} with {profile.name}; {profile.digest} is required")
    key = signer.public_key()
    if profile.name == "ed25519" and not isinstance(key, ed25519.Ed25519PublicKey):
        raise VerificationError(f"Ed25519 signature but the signer certificate holds a {type(key).__name__}")
    if profile.name == "ecdsa-p256" and not (isinstance(key, ec.EllipticCurvePublicKey)
                                             and isinstance(key.curve, ec.SECP256R1)):
        raise VerificationError(f"ECDSA P-256 signature but the signer certificate holds a {type(key).__name__}")
    return profile


def _signed_attributes(signer_info: cms.SignerInfo) -> tuple[bytes, dict[str, core.Asn1Value]]:
    """The bytes the signature covers (DER SET OF, RFC 5652 §5.4) and each required attribute's value."""
    tagged = signer_info["signed_attrs"]
    if isinstance(tagged, core.Void) or not len(tagged):
        raise VerificationError("no signed attributes: nothing binds a signing time to the content")
    to_be_signed = b"\x31" + _der_length(len(tagged.contents)) + tagged.contents
    if cms.CMSAttributes.load(to_be_signed).dump(force=True) != to_be_signed:
        raise VerificationError("signed attributes are not DER-encoded (RFC 5652 §5.3)")
    values: dict[str, core.Asn1Value] = {}
    for attribute in tagged:
        oid = attribute["type"].dotted
        if oid in values:
            raise VerificationError(f"signed attribute {oid} appears twice")
        if oid in REQUIRED_ATTRIBUTES and len(attribute["values"]) != 1:
            raise VerificationError(f"signed attribute {oid} has {len(attribute['values'])} values; one expected")
        values[oid] = attribute["values"][0] if len(attribute["values"]) else None
    missing = [oid for oid in REQUIRED_ATTRIBUTES if oid not in values]
    if missing:
        raise VerificationError(f"signed attributes lack {missing} (content-type, message-digest, signing-time)")
    return to_be_signed, values


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _signature_holds(public_key, profile: str, signature: bytes, data: bytes) -> bool:
    try:
        if profile == "ed25519":
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- Certification path (RFC 5280 §6, the parts a signing chain needs) --------------------------

# Critical extensions this check understands; any other critical one makes a certificate unusable.
_UNDERSTOOD_CRITICAL = {x509.BasicConstraints.oid, x509.KeyUsage.oid}


def certification_path(signer: x509.Certificate, pool: Iterable[x509.Certificate],
                       anchors: Sequence[x509.Certificate], *, at: datetime) -> tuple[x509.Certificate, ...]:
    """Signer → intermediates from `pool` → a trust anchor, each valid `at` and allowed to issue."""
    pool = list(pool)
    path = [signer]
    while path[-1] not in anchors:
        current = path[-1]
        issuer = next((a for a in anchors if _issued(current, a)), None)
        if issuer is None:
            issuer = next((c for c in pool if c not in path and _issued(current, c)), None)
        if issuer is None:
            raise VerificationError(f"no certification path from {current.subject.rfc4514_string()} "
                                    f"(issuer {current.issuer.rfc4514_string()}) to a trust anchor")
        path.append(issuer)
        if len(path) > MAX_PATH_LENGTH:
            raise VerificationError(f"certification path longer than {MAX_PATH_LENGTH}")
    for depth, certificate in enumerate(path):
        _check_certificate(certificate, depth, at)
    return tuple(path)


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)  # issuer name and signature
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_certificate(certificate: x509.Certificate, depth: int, at: datetime) -> None:
    name = certificate.subject.rfc4514_string()
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise VerificationError(f"certificate {name} is not valid at the signing time {at.isoformat()} "
                                f"({certificate.not_valid_before_utc.isoformat()} – "
                                f"{certificate.not_valid_after_utc.isoformat()})")
    for extension in certificate.extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD_CRITICAL:
            raise VerificationError(f"certificate {name} has an unsupported critical extension "
                                    f"{extension.oid.dotted_string}")
    key_usage = _extension(certificate, x509.KeyUsage)
    if depth == 0:
        if key_usage is not None and not (key_usage.digital_signature or key_usage.content_commitment):
            raise VerificationError(f"signer certificate {name} may not sign (key usage)")
        return
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise VerificationError(f"certificate {name} issued another but is not a CA (basic constraints)")
    if key_usage is not None and not key_usage.key_cert_sign:
        raise VerificationError(f"certificate {name} may not sign certificates (key usage)")
    intermediates_below = depth - 1
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise VerificationError(f"certificate {name} allows {constraints.path_length} intermediates below it, "
                                f"the path has {intermediates_below}")


def _extension(certificate: x509.Certificate, kind):
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# --- Checkpoint signatures (raw, not CMS) -------------------------------------------------------

def public_key_id(certificate: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo: the key id a checkpoint names."""
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def verify_checkpoint(checkpoint: bytes, signature: bytes, key_id: str, certificate: x509.Certificate) -> str:
    """Check a raw checkpoint signature with a certificate (best: `VerifiedSignature.signer` of its file).

    Returns the profile. Ed25519: the 64-byte signature over the bytes; P-256: a DER
    ECDSA-Sig-Value over SHA-256 of the bytes.
    """
    if key_id != public_key_id(certificate):
        raise VerificationError(f"checkpoint names key {key_id}, the certificate holds {public_key_id(certificate)}")
    key = certificate.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        profile = "ed25519"
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        profile = "ecdsa-p256"
    else:
        raise VerificationError(f"checkpoint key is a {type(key).__name__}, neither Ed25519 nor P-256")
    if not _signature_holds(key, profile, signature, checkpoint):
        raise VerificationError("checkpoint signature does not verify")
    return profile


# --- Rebuilds: is a rebuilt signature the archived one? ------------------------------------------

class RebuildMatch(str, enum.Enum):
    IDENTICAL = "identical"  # byte for byte (always, for Ed25519)
    SIGNATURE_REDRAWN = "signature-redrawn"  # ECDSA only: all else identical, a new nonce, both verify


def compare_rebuilt(archived: bytes, rebuilt: bytes, content: bytes,
                    trust_anchors: Sequence[x509.Certificate]) -> RebuildMatch:
    """Compare a rebuilt detached CMS with the archived one over the same content.

    ECDSA signatures from SoftHSM2 (and most HSMs) use a random nonce, so a rebuild can only be
    byte-identical outside the signature value; Ed25519 is deterministic, so any difference there
    means the content, the signing time, the chain or the key differ.
    """
    verified = verify_detached(archived, content, trust_anchors)
    if archived == rebuilt:
        return RebuildMatch.IDENTICAL
    verify_detached(rebuilt, content, trust_anchors)
    if verified.profile != "ecdsa-p256":
        raise VerificationError(f"rebuilt {verified.profile} signature differs from the archived one; "
                                "the profile is deterministic, so an input or the key changed")
    if _all_but_signature_value(archived) != _all_but_signature_value(rebuilt):
        raise VerificationError("rebuilt signature differs from the archived one beyond the ECDSA signature value")
    return RebuildMatch.SIGNATURE_REDRAWN


def compare_rebuilt_checkpoint(archived: bytes, rebuilt: bytes, checkpoint: bytes, key_id: str,
                               certificate: x509.Certificate) -> RebuildMatch:
    """The same rule for raw checkpoint signatures over identical checkpoint bytes."""
    profile = verify_checkpoint(checkpoint, archived, key_id, certificate)
    if archived == rebuilt:
        return RebuildMatch.IDENTICAL
    verify_checkpoint(checkpoint, rebuilt, key_id, certificate)
    if profile != "ecdsa-p256":
        raise VerificationError("rebuilt Ed25519 checkpoint signature differs from the archived one")
    return RebuildMatch.SIGNATURE_REDRAWN


def _all_but_signature_value(cms_der: bytes) -> tuple[bytes, ...]:
    """Every field's encoding as received, except the SignerInfo's signature value."""
    content_info = cms.ContentInfo.load(cms_der, strict=True)
    signed_data = content_info["content"]
    fields = [content_info["content_type"].dump()]
    fields += [signed_data[name].dump() for name in ("version", "digest_algorithms", "encap_content_info",
                                                      "certificates", "crls")]
    for signer_info in signed_data["signer_infos"]:
        fields += [signer_info[name].dump() for name in ("version", "sid", "digest_algorithm", "signed_attrs",
                                                          "signature_algorithm", "unsigned_attrs")]
    return tuple(fields)
