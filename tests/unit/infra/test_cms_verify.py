"""The independent verifier's certificate path, checkpoint signatures, and the rebuild comparison."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from cdr_mediation.infra.cms import CmsError, SigningIdentity, sign_checkpoint, sign_detached
from cdr_mediation.infra.cms_verify import (
    RebuildMatch,
    VerificationError,
    compare_rebuilt,
    compare_rebuilt_checkpoint,
    public_key_id,
    verify_checkpoint,
    verify_detached,
)
from cdr_mediation.infra.hsm import SignatureProfile

from .conftest import SoftwareSigner

CUT_OFF = datetime(2026, 3, 14, tzinfo=timezone.utc)
CONTENT = b"PK\x03\x04 export zip bytes"
CHECKPOINT = b'{"chain_seq_first":1,"chain_seq_last":42,"head":"ab12","merkle_root":"cd34","operator":"op-1"}'
LABEL = "cdr-export-ed25519"


def _certificate(subject: str, public_key, issuer_key, issuer_name: x509.Name | None = None, *,
                 ca: bool, path_length: int | None = None, key_usage: dict[str, bool] | None = None,
                 valid: tuple[datetime, datetime] = (datetime(2020, 1, 1, tzinfo=timezone.utc),
                                                     datetime(2040, 1, 1, tzinfo=timezone.utc))):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    usages = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                            "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    usages.update(key_usage or ({"key_cert_sign": True} if ca else {"digital_signature": True}))
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(issuer_name or name).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(**usages), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def three_level():
    """Root → intermediate → Ed25519 leaf, as a production PKI would issue it."""
    root_key, intermediate_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf_key = ed25519.Ed25519PrivateKey.generate()
    root = _certificate("root", root_key.public_key(), root_key, ca=True, path_length=1)
    intermediate = _certificate("intermediate", intermediate_key.public_key(), root_key, root.subject,
                                ca=True, path_length=0)
    leaf = _certificate("leaf", leaf_key.public_key(), intermediate_key, intermediate.subject, ca=False)
    return {"root": root, "intermediate": intermediate, "intermediate_key": intermediate_key,
            "leaf": leaf, "signer": SoftwareSigner({LABEL: leaf_key}), "leaf_key": leaf_key}


def _sign_with(chain: tuple[x509.Certificate, ...], signer, cut_off=CUT_OFF) -> bytes:
    identity = SigningIdentity(SignatureProfile.ED25519, LABEL, tuple(_der(c) for c in chain))
    return sign_detached(CONTENT, identity=identity, signer=signer, signing_time=cut_off)


# --- certification path ----------------------------------------------------------------------------

def test_path_through_an_intermediate_carried_in_the_signed_data(three_level):
    signed = _sign_with((three_level["leaf"], three_level["intermediate"]), three_level["signer"])
    verified = verify_detached(signed, CONTENT, [three_level["root"]])
    assert verified.path == (three_level["leaf"], three_level["intermediate"], three_level["root"])


def test_a_missing_intermediate_leaves_no_path(three_level):
    signed = _sign_with((three_level["leaf"],), three_level["signer"])
    with pytest.raises(VerificationError, match="no certification path from CN=leaf"):
        verify_detached(signed, CONTENT, [three_level["root"]])


def test_the_intermediate_itself_may_be_the_trust_anchor(three_level):
    signed = _sign_with((three_level["leaf"], three_level["intermediate"]), three_level["signer"])
    assert verify_detached(signed, CONTENT, [three_level["intermediate"]]).path[-1] == three_level["intermediate"]


def test_a_certificate_expired_at_the_signing_time_is_refused(three_level):
    leaf = _certificate("leaf", three_level["leaf_key"].public_key(), three_level["intermediate_key"],
                        three_level["intermediate"].subject, ca=False,
                        valid=(datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2026, 3, 13, tzinfo=timezone.utc)))
    signed = _sign_with((leaf, three_level["intermediate"]), three_level["signer"])
    with pytest.raises(VerificationError, match="not valid at the signing time 2026-03-14"):
        verify_detached(signed, CONTENT, [three_level["root"]])


def test_a_leaf_without_signing_key_usage_is_refused(three_level):
    leaf = _certificate("leaf", three_level["leaf_key"].public_key(), three_level["intermediate_key"],
                        three_level["intermediate"].subject, ca=False, key_usage={"key_agreement": True})
    signed = _sign_with((leaf, three_level["intermediate"]), three_level["signer"])
    with pytest.raises(VerificationError, match="signer certificate CN=leaf may not sign"):
        verify_detached(signed, CONTENT, [three_level["root"]])


def test_an_issuer_that_is_not_a_ca_is_refused(three_level):
    root_key = ec.generate_private_key(ec.SECP256R1())
    not_ca_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("root", root_key.public_key(), root_key, ca=True)
    not_ca = _certificate("not-a-ca", not_ca_key.public_key(), root_key, root.subject, ca=False,
                          key_usage={"digital_signature": True, "key_cert_sign": True})
    leaf = _certificate("leaf", three_level["leaf_key"].public_key(), not_ca_key, not_ca.subject, ca=False)
    signed = _sign_with((leaf, not_ca), three_level["signer"])
    with pytest.raises(VerificationError, match="CN=not-a-ca issued another but is not a CA"):
        verify_detached(signed, CONTENT, [root])


def test_path_length_constraint_is_enforced(three_level):
    # The root allows no intermediate below it (path length 0), yet one sits between it and the leaf.
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate("strict root", root_key.public_key(), root_key, ca=True, path_length=0)
    intermediate = _certificate("intermediate", three_level["intermediate_key"].public_key(), root_key,
                                root.subject, ca=True, path_length=0)
    signed = _sign_with((three_level["leaf"], intermediate), three_level["signer"])
    with pytest.raises(VerificationError, match="allows 0 intermediates below it"):
        verify_detached(signed, CONTENT, [root])


# --- checkpoint signatures ---------------------------------------------------------------------------

def _leaf(dev_chain, profile) -> x509.Certificate:
    return x509.load_der_x509_certificate(dev_chain.identities[profile].chain[0])


def test_checkpoint_signature_verifies_with_the_certificate_and_names_its_key(dev_chain, profile):
    signed = sign_checkpoint(CHECKPOINT, identity=dev_chain.identities[profile], signer=dev_chain.signer)
    leaf = _leaf(dev_chain, profile)
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert signed.key_id == hashlib.sha256(spki).hexdigest() == public_key_id(leaf)
    assert verify_checkpoint(CHECKPOINT, signed.signature, signed.key_id, leaf) == profile.value


def test_ed25519_checkpoint_signature_is_deterministic(dev_chain):
    identity = dev_chain.identities[SignatureProfile.ED25519]
    first = sign_checkpoint(CHECKPOINT, identity=identity, signer=dev_chain.signer)
    assert first == sign_checkpoint(CHECKPOINT, identity=identity, signer=dev_chain.signer)
    assert len(first.signature) == 64


def test_changed_checkpoint_byte_or_wrong_key_is_refused(dev_chain, profile):
    signed = sign_checkpoint(CHECKPOINT, identity=dev_chain.identities[profile], signer=dev_chain.signer)
    leaf = _leaf(dev_chain, profile)
    with pytest.raises(VerificationError, match="checkpoint signature does not verify"):
        verify_checkpoint(CHECKPOINT.replace(b'"chain_seq_last":42', b'"chain_seq_last":41'),
                          signed.signature, signed.key_id, leaf)
    other = _leaf(dev_chain, next(p for p in SignatureProfile if p is not profile))
    with pytest.raises(VerificationError, match="checkpoint names key"):
        verify_checkpoint(CHECKPOINT, signed.signature, signed.key_id, other)


def test_checkpoint_bytes_shaped_like_cms_attributes_are_refused(dev_chain):
    # Domain separation: the same key signs CMS attribute sets (DER SET, 0x31 ...).
    with pytest.raises(CmsError, match="DER SET"):
        sign_checkpoint(b"\x31\x00", identity=dev_chain.identities[SignatureProfile.ED25519], signer=dev_chain.signer)


# --- rebuild comparison -------------------------------------------------------------------------------

def _sign(dev_chain, profile, cut_off=CUT_OFF) -> bytes:
    return sign_detached(CONTENT, identity=dev_chain.identities[profile], signer=dev_chain.signer,
                         signing_time=cut_off)


def test_ed25519_rebuild_is_identical(dev_chain):
    archived, rebuilt = _sign(dev_chain, SignatureProfile.ED25519), _sign(dev_chain, SignatureProfile.ED25519)
    assert compare_rebuilt(archived, rebuilt, CONTENT, [dev_chain.ca_cert]) is RebuildMatch.IDENTICAL


def test_ecdsa_rebuild_differs_only_in_the_signature_value(dev_chain):
    archived, rebuilt = _sign(dev_chain, SignatureProfile.ECDSA_P256), _sign(dev_chain, SignatureProfile.ECDSA_P256)
    assert archived != rebuilt  # a fresh ECDSA nonce each time
    assert compare_rebuilt(archived, rebuilt, CONTENT, [dev_chain.ca_cert]) is RebuildMatch.SIGNATURE_REDRAWN


def test_rebuild_with_another_cut_off_is_a_mismatch(dev_chain, profile):
    archived = _sign(dev_chain, profile)
    rebuilt = _sign(dev_chain, profile, cut_off=datetime(2026, 3, 15, tzinfo=timezone.utc))
    with pytest.raises(VerificationError, match="differs"):
        compare_rebuilt(archived, rebuilt, CONTENT, [dev_chain.ca_cert])


def test_rebuild_that_does_not_verify_is_a_mismatch(dev_chain, profile):
    archived = _sign(dev_chain, profile)
    rebuilt = archived[:-1] + bytes([archived[-1] ^ 0x01])  # last byte: inside the signature value
    with pytest.raises(VerificationError, match="does not verify"):
        compare_rebuilt(archived, rebuilt, CONTENT, [dev_chain.ca_cert])


def test_checkpoint_rebuild_comparison(dev_chain, profile):
    identity, leaf = dev_chain.identities[profile], _leaf(dev_chain, profile)
    first = sign_checkpoint(CHECKPOINT, identity=identity, signer=dev_chain.signer)
    second = sign_checkpoint(CHECKPOINT, identity=identity, signer=dev_chain.signer)
    expected = RebuildMatch.IDENTICAL if profile is SignatureProfile.ED25519 else RebuildMatch.SIGNATURE_REDRAWN
    assert compare_rebuilt_checkpoint(first.signature, second.signature, CHECKPOINT, first.key_id, leaf) is expected


# --- the signer of a CMS kept without its content ------------------------------------------------

def test_the_signer_of_a_cms_is_verified_without_the_content(three_level):
    from cdr_mediation.infra.cms_verify import verify_detached_signer

    signed = _sign_with((three_level["leaf"], three_level["intermediate"]), three_level["signer"])
    verified = verify_detached_signer(signed, [three_level["root"]])
    assert verified.signer == three_level["leaf"] and verified.signing_time == CUT_OFF
    assert verified.message_digest == hashlib.sha512(CONTENT).digest()  # what the content must hash to
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = _certificate("other root", other_key.public_key(), other_key, ca=True)
    with pytest.raises(VerificationError, match="no certification path"):
        verify_detached_signer(signed, [other_root])


def test_a_cms_whose_signed_attributes_were_altered_is_refused_without_the_content(three_level):
    from cdr_mediation.infra.cms_verify import verify_detached_signer

    signed = bytearray(_sign_with((three_level["leaf"], three_level["intermediate"]), three_level["signer"]))
    at = bytes(signed).index(hashlib.sha512(CONTENT).digest())
    signed[at] ^= 0x01  # the message-digest attribute: the signature over the attributes breaks
    with pytest.raises(VerificationError, match="does not verify"):
        verify_detached_signer(bytes(signed), [three_level["root"]])
