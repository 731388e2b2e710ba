"""Software stand-ins for the HSM: the same `sign(label, profile, data)` call, keys in memory.

The certificates come from the stack's own dev-chain functions, so these tests also cover what
`cdrmed stack up` issues (key usage, CA constraints), without a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cdr_mediation.infra.cms import SigningIdentity
from cdr_mediation.infra.hsm import SignatureProfile
from cdr_mediation.stack.hsm import KEY_LABELS, dev_leaf_certificate, dev_root_ca


class SoftwareSigner:
    """Signs like `HsmSigner`: raw Ed25519, or a DER ECDSA-Sig-Value over SHA-256."""

    def __init__(self, keys: dict[str, object]) -> None:
        self.keys = keys
        self.calls: list[tuple[str, SignatureProfile, bytes]] = []

    def sign(self, key_label: str, profile: SignatureProfile, data: bytes) -> bytes:
        self.calls.append((key_label, profile, data))
        key = self.keys[key_label]
        if profile is SignatureProfile.ED25519:
            return key.sign(data)
        return key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class DevChain:
    ca_key: object
    ca_cert: object
    signer: SoftwareSigner
    identities: dict[SignatureProfile, SigningIdentity]


def make_dev_chain() -> DevChain:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = dev_root_ca(ca_key)
    keys = {KEY_LABELS[SignatureProfile.ED25519]: ed25519.Ed25519PrivateKey.generate(),
            KEY_LABELS[SignatureProfile.ECDSA_P256]: ec.generate_private_key(ec.SECP256R1())}
    identities = {}
    for profile, label in KEY_LABELS.items():
        leaf = dev_leaf_certificate(ca_key, ca_cert, keys[label].public_key(), label)
        identities[profile] = SigningIdentity(profile, label, (leaf.public_bytes(serialization.Encoding.DER),))
    return DevChain(ca_key, ca_cert, SoftwareSigner(keys), identities)


@pytest.fixture(scope="session")
def dev_chain() -> DevChain:
    return make_dev_chain()


@pytest.fixture(params=list(SignatureProfile), ids=lambda p: p.value)
def profile(request) -> SignatureProfile:
    return request.param
