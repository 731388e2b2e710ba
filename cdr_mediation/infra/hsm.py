"""Signing keys in an HSM over PKCS#11 (SoftHSM2 locally, a network HSM in production).

Private keys are generated in the token as sensitive and non-extractable; this module can only
ask the token to sign. Both profiles yield deterministic-input signatures over caller bytes:
Ed25519 (RFC 8032, PureEdDSA: the token hashes internally) and ECDSA P-256 over SHA-256
(the token receives the digest; the signature is returned DER-encoded as X.509/CMS expect).
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
from dataclasses import dataclass

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class HsmError(RuntimeError):
    """The HSM could not be reached, logged into, or asked to sign; the message says which."""


class SignatureProfile(str, enum.Enum):
    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"


# Curve OIDs for CKA_EC_PARAMS (RFC 8410 id-Ed25519; SEC 2 prime256v1).
CURVE_OID = {
    SignatureProfile.ED25519: "1.3.101.112",
    SignatureProfile.ECDSA_P256: "1.2.840.10045.3.1.7",
}


@dataclass(frozen=True)
class HsmConfig:
    module_path: str
    token_label: str
    pin: str
    softhsm2_conf: str | None = None  # SoftHSM2 only: must be in the environment before loading


class HsmSigner:
    """A logged-in session on one token; thread-safe (PKCS#11 sessions are not)."""

    def __init__(self, config: HsmConfig) -> None:
        import pkcs11

        if config.softhsm2_conf:
            current = os.environ.get("SOFTHSM2_CONF")
            if current and current != config.softhsm2_conf:
                raise HsmError(
                    f"SOFTHSM2_CONF is already {current!r} in this process; SoftHSM2 reads it once"
                )
            os.environ["SOFTHSM2_CONF"] = config.softhsm2_conf
        self._lock = threading.Lock()
        try:
            lib = pkcs11.lib(config.module_path)
            token = lib.get_token(token_label=config.token_label)
            self._session = token.open(user_pin=config.pin, rw=False)
        except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
            raise HsmError(
                f"HSM token {config.token_label!r} via {config.module_path}: {type(exc).__name__} {exc}"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def __enter__(self) -> "HsmSigner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, label: str, object_class):
        import pkcs11

        try:
            return self._session.get_key(object_class=object_class, label=label)
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
            raise HsmError(f"key {label!r}: {type(exc).__name__}") from exc

    def sign(self, key_label: str, profile: SignatureProfile, data: bytes) -> bytes:
        """Sign `data`: 64-byte Ed25519 signature, or a DER ECDSA-Sig-Value for P-256."""
        import pkcs11
        from pkcs11 import Mechanism, ObjectClass

        with self._lock:
            key = self._key(key_label, ObjectClass.PRIVATE_KEY)
            try:
                if profile is SignatureProfile.ED25519:
                    return key.sign(data, mechanism=Mechanism.EDDSA)
                raw = key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
            except pkcs11.PKCS11Error as exc:
                raise HsmError(f"sign with {key_label!r}: {type(exc).__name__} {exc}") from exc
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def public_key(self, key_label: str, profile: SignatureProfile):
        """The public key as a `cryptography` object, for verification and certificates."""
        from asn1crypto.core import OctetString
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from pkcs11 import Attribute, ObjectClass

        with self._lock:
            point = OctetString.load(self._key(key_label, ObjectClass.PUBLIC_KEY)[Attribute.EC_POINT]).native
        if profile is SignatureProfile.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(point)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def verify(public_key, profile: SignatureProfile, data: bytes, signature: bytes) -> bool:
    """Check a signature made by `HsmSigner.sign` with the public key alone (no HSM)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if profile is SignatureProfile.ED25519:
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
