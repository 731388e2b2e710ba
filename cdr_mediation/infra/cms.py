"""Detached CMS signatures (RFC 5652 SignedData) over export files, made by a key in the HSM.

The regulator receives the export ZIP and, beside it, a DER `ContentInfo` holding a detached
`SignedData`: no encapsulated content, one `SignerInfo` identified by issuer and serial number,
signed attributes content-type (id-data), message-digest and signing-time, and the signer's
certificate chain. The signature is made over the DER `SET OF` signed attributes, so the token
only ever sees a few hundred bytes, never the file.

Two profiles (docs/signing.md):
- Ed25519 (RFC 8419): digest SHA-512 in the message-digest attribute, signature id-Ed25519 over
  the attributes (PureEdDSA, the token hashes internally). Deterministic: the same file, chain
  and cut-off give byte-identical output.
- ECDSA P-256 (RFC 5753/5758): digest SHA-256, signature ecdsa-with-SHA256. SoftHSM2 draws a
  fresh nonce per signature, so only the signature value differs between two runs.

Signing time is the caller's cut-off time, never the wall clock, so the signed attributes are a
pure function of (file, profile, cut-off). Checkpoints get a raw signature instead of a CMS
(`sign_checkpoint`): an auditor can check it with `openssl pkeyutl`/`openssl dgst` for both
profiles, which OpenSSL 3.0 cannot do for an Ed25519 CMS.

Verification lives in `cms_verify.py`, written independently of this module on purpose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from asn1crypto import algos, cms, core, x509 as asn1_x509

from cdr_mediation.infra.hsm import SignatureProfile


class CmsError(ValueError):
    """A signature could not be made as specified (bad input, or a key that does not match its certificate)."""


class Signer(Protocol):
    """What `infra.hsm.HsmSigner` offers: sign bytes with a named key, never reveal it."""

    def sign(self, key_label: str, profile: SignatureProfile, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class _Algorithms:
    digest: str  # asn1crypto DigestAlgorithmId name
    signature: str  # asn1crypto SignedDigestAlgorithmId name


_ALGORITHMS = {
    # RFC 8419 §3: with signed attributes, Ed25519 pairs with SHA-512.
    SignatureProfile.ED25519: _Algorithms(digest="sha512", signature="ed25519"),
    SignatureProfile.ECDSA_P256: _Algorithms(digest="sha256", signature="sha256_ecdsa"),
}


@dataclass(frozen=True)
class SigningIdentity:
    """An HSM key and the certificates that name it: leaf first, then intermediates (root optional)."""

    profile: SignatureProfile
    key_label: str
    chain: tuple[bytes, ...]  # DER certificates

    def __post_init__(self) -> None:
        if not self.chain:
            raise CmsError(f"signing identity {self.key_label!r} has no certificate")

    @classmethod
    def from_pem_file(cls, profile: SignatureProfile, key_label: str, path: Path) -> "SigningIdentity":
        """Read a PEM bundle (leaf first), as the stack writes one per HSM key."""
        from asn1crypto import pem

        blocks = [der for kind, _, der in pem.unarmor(path.read_bytes(), multiple=True) if kind == "CERTIFICATE"]
        if not blocks:
            raise CmsError(f"{path}: no CERTIFICATE block")
        return cls(profile, key_label, tuple(blocks))

    @property
    def leaf(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.chain[0])


def sign_detached(content: bytes, *, identity: SigningIdentity, signer: Signer, signing_time: datetime) -> bytes:
    """DER ContentInfo(SignedData) over `content`, detached; `signing_time` is the file's cut-off."""
    digest = hashlib.new(_ALGORITHMS[identity.profile].digest, content).digest()
    return _sign_digest(digest, identity=identity, signer=signer, signing_time=signing_time)


def sign_detached_file(path: Path, *, identity: SigningIdentity, signer: Signer, signing_time: datetime) -> bytes:
    """`sign_detached` over a file's bytes, read in chunks: a multi-GB export never sits in memory."""
    digest = hashlib.new(_ALGORITHMS[identity.profile].digest)
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return _sign_digest(digest.digest(), identity=identity, signer=signer, signing_time=signing_time)


def _sign_digest(content_digest: bytes, *, identity: SigningIdentity, signer: Signer, signing_time: datetime) -> bytes:
    algorithms = _ALGORITHMS[identity.profile]
    leaf = identity.leaf
    attributes = cms.CMSAttributes([
        {"type": "content_type", "values": ["data"]},
        {"type": "message_digest", "values": [content_digest]},
        {"type": "signing_time", "values": [_cms_time(signing_time)]},
    ])
    # asn1crypto encodes a SET OF sorted by encoding, i.e. DER, which is what RFC 5652 §5.4 says
    # is signed (with the universal SET tag, not the [0] it carries inside SignerInfo).
    to_be_signed = attributes.dump()
    signature = signer.sign(identity.key_label, identity.profile, to_be_signed)
    _require_valid(leaf, identity, to_be_signed, signature)

    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": leaf.issuer, "serial_number": leaf.serial_number})}),
        "digest_algorithm": _digest_algorithm(algorithms.digest),
        "signed_attrs": attributes,
        "signature_algorithm": {"algorithm": algorithms.signature},
        "signature": signature,
    })
    signed_data = cms.SignedData({
        # v1: issuerAndSerialNumber, id-data, no attribute certificates (RFC 5652 §5.1).
        "version": "v1",
        "digest_algorithms": [_digest_algorithm(algorithms.digest)],
        "encap_content_info": {"content_type": "data"},  # no eContent: detached
        # A SET OF, so DER sorts it by encoding; verifiers build the path, order carries no meaning.
        "certificates": [cms.CertificateChoices({"certificate": asn1_x509.Certificate.load(der)})
                         for der in identity.chain],
        "signer_infos": [signer_info],
    })
    # No force=True: that would re-encode the certificates from their parsed values, and a CA's
    # certificate must travel byte for byte or its signature no longer verifies.
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


@dataclass(frozen=True)
class CheckpointSignature:
    """A raw signature over canonical checkpoint bytes, and which key made it.

    `key_id` is the lowercase hex SHA-256 of the signer's DER SubjectPublicKeyInfo, so it does
    not change when the certificate is renewed for the same HSM key and an auditor can compute it
    from any certificate with openssl. `signature` is 64 bytes (Ed25519) or a DER ECDSA-Sig-Value
    (P-256 over SHA-256), the forms `openssl pkeyutl -rawin` and `openssl dgst -verify` read.
    """

    profile: SignatureProfile
    key_id: str
    signature: bytes


def sign_checkpoint(checkpoint: bytes, *, identity: SigningIdentity, signer: Signer) -> CheckpointSignature:
    """Sign canonical checkpoint bytes directly with the file's signing key."""
    # The same key signs CMS attribute sets, which are DER SET OF (first byte 0x31). Refusing
    # such bytes here keeps a checkpoint signature from ever doubling as a CMS signature.
    if checkpoint[:1] == b"\x31":
        raise CmsError("checkpoint bytes look like a DER SET; a checkpoint is canonical JSON")
    leaf = identity.leaf
    signature = signer.sign(identity.key_label, identity.profile, checkpoint)
    _require_valid(leaf, identity, checkpoint, signature)
    return CheckpointSignature(identity.profile, key_id(leaf["tbs_certificate"]["subject_public_key_info"].dump()),
                               signature)


def key_id(subject_public_key_info_der: bytes) -> str:
    return hashlib.sha256(subject_public_key_info_der).hexdigest()


def _digest_algorithm(name: str) -> algos.DigestAlgorithm:
    # RFC 5754 §2 and RFC 8419 §3.1: SHA-2 parameters absent (asn1crypto would write NULL).
    return algos.DigestAlgorithm({"algorithm": name, "parameters": None})


def _cms_time(moment: datetime) -> cms.Time:
    """RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime otherwise; whole seconds in UTC."""
    if moment.tzinfo is None or moment.utcoffset() != timedelta(0):
        raise CmsError(f"signing time must be UTC with a timezone, got {moment.isoformat()}")
    if moment.microsecond:
        # UTCTime has no fractions; rounding would make the signed time differ from the cut-off.
        raise CmsError(f"signing time must be whole seconds, got {moment.isoformat()}")
    moment = moment.astimezone(timezone.utc)
    if 1950 <= moment.year < 2050:
        return cms.Time({"utc_time": core.UTCTime(moment)})
    return cms.Time({"generalized_time": core.GeneralizedTime(moment)})


def _require_valid(leaf: asn1_x509.Certificate, identity: SigningIdentity, data: bytes, signature: bytes) -> None:
    """Check the fresh signature against the leaf certificate before anything leaves this process.

    A certificate that names another key (a re-initialised token, a mixed-up label) would
    otherwise only be noticed by the regulator.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    public_key = load_der_public_key(leaf["tbs_certificate"]["subject_public_key_info"].dump())
    try:
        if identity.profile is SignatureProfile.ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif identity.profile is SignatureProfile.ECDSA_P256 and isinstance(public_key, ec.EllipticCurvePublicKey) \
                and isinstance(public_key.curve, ec.SECP256R1):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise CmsError(f"certificate of {identity.key_label!r} holds a {type(public_key).__name__}, "
                           f"not a {identity.profile.value} key")
    except InvalidSignature:
        raise CmsError(f"HSM key {identity.key_label!r} does not match its certificate "
                       f"(serial {leaf.serial_number}): the signature does not verify") from None
