"""Detached CMS over an export file: what the regulator decodes, and every tampering it must catch."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from asn1crypto import cms

from cdr_mediation.infra.cms import CmsError, SigningIdentity, sign_detached, sign_detached_file
from cdr_mediation.infra.cms_verify import VerificationError, verify_detached, verify_detached_file
from cdr_mediation.infra.hsm import SignatureProfile

from .conftest import make_dev_chain

CUT_OFF = datetime(2026, 3, 14, 0, 0, tzinfo=timezone.utc)
CONTENT = b"PK\x03\x04 export zip bytes " + bytes(range(256)) * 40
EXPECTED = {
    SignatureProfile.ED25519: ("sha512", "ed25519"),
    SignatureProfile.ECDSA_P256: ("sha256", "sha256_ecdsa"),
}


def _sign(dev_chain, profile, content=CONTENT, cut_off=CUT_OFF) -> bytes:
    return sign_detached(content, identity=dev_chain.identities[profile], signer=dev_chain.signer,
                         signing_time=cut_off)


def _attributes(signed: bytes) -> dict[str, object]:
    signer_info = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]
    return {attribute["type"].native: [value.native for value in attribute["values"]]
            for attribute in signer_info["signed_attrs"]}


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, "the field must occur exactly once"
    return data.replace(old, new)


def _flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


# --- structure ---------------------------------------------------------------------------------

def test_signed_data_is_detached_rfc5652_with_the_profile_algorithms(dev_chain, profile):
    content_info = cms.ContentInfo.load(_sign(dev_chain, profile), strict=True)
    digest, signature_algorithm = EXPECTED[profile]
    assert content_info["content_type"].native == "signed_data"
    signed_data = content_info["content"]
    assert signed_data["version"].native == "v1"
    assert [a["algorithm"].native for a in signed_data["digest_algorithms"]] == [digest]
    assert signed_data["encap_content_info"]["content_type"].native == "data"
    assert signed_data["encap_content_info"]["content"].native is None  # detached: the ZIP is not inside

    leaf = dev_chain.identities[profile].leaf
    assert [c.chosen.dump() for c in signed_data["certificates"]] == [leaf.dump()]
    (signer_info,) = signed_data["signer_infos"]
    assert signer_info["version"].native == "v1"
    assert signer_info["sid"].name == "issuer_and_serial_number"
    assert signer_info["sid"].chosen["issuer"] == leaf.issuer
    assert signer_info["sid"].chosen["serial_number"].native == leaf.serial_number
    assert signer_info["digest_algorithm"]["algorithm"].native == digest
    assert signer_info["signature_algorithm"]["algorithm"].native == signature_algorithm
    assert signer_info["unsigned_attrs"].native is None


def test_sha2_and_signature_algorithm_parameters_are_absent(dev_chain, profile):
    # RFC 5754 §2 / RFC 8419 §3.1 / RFC 5758 §3.2: generate absent parameters, not NULL.
    signed_data = cms.ContentInfo.load(_sign(dev_chain, profile))["content"]
    signer_info = signed_data["signer_infos"][0]
    for algorithm in (signed_data["digest_algorithms"][0], signer_info["digest_algorithm"],
                      signer_info["signature_algorithm"]):
        oid = algorithm["algorithm"].dump()
        assert algorithm.dump() == b"\x30" + bytes([len(oid)]) + oid  # SEQUENCE { OID } and nothing else


def test_signed_attributes_are_content_type_digest_and_the_cut_off(dev_chain, profile):
    attributes = _attributes(_sign(dev_chain, profile))
    digest = EXPECTED[profile][0]
    assert attributes == {
        "content_type": ["data"],
        "message_digest": [hashlib.new(digest, CONTENT).digest()],
        "signing_time": [CUT_OFF],
    }


def test_the_hsm_signs_the_der_set_of_attributes_not_the_file(dev_chain):
    signer = dev_chain.signer
    signer.calls.clear()
    signed = _sign(dev_chain, SignatureProfile.ED25519)
    ((label, _, data),) = signer.calls
    signed_attrs = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signed_attrs"]
    assert label == "cdr-export-ed25519"
    assert data[:1] == b"\x31" and data.endswith(signed_attrs.contents)  # universal SET, not [0]
    assert len(data) < 200  # a few hundred bytes cross to the token, whatever the file size


def test_signing_time_outside_utctime_years_uses_generalized_time(dev_chain, profile):
    late = datetime(2051, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    signed = _sign(dev_chain, profile, cut_off=late)
    signer_info = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]
    (time_attribute,) = [a for a in signer_info["signed_attrs"] if a["type"].native == "signing_time"]
    assert time_attribute["values"][0].name == "generalized_time"
    assert verify_detached(signed, CONTENT, [dev_chain.ca_cert]).signing_time == late


@pytest.mark.parametrize("bad", [datetime(2026, 3, 14), datetime(2026, 3, 14, 0, 0, 0, 500, tzinfo=timezone.utc),
                                 datetime(2026, 3, 14, tzinfo=timezone(timedelta(hours=4, minutes=30)))],
                         ids=["naive", "fractional-seconds", "not-utc"])
def test_a_signing_time_that_cannot_be_signed_exactly_is_refused(dev_chain, bad):
    with pytest.raises(CmsError, match="signing time"):
        _sign(dev_chain, SignatureProfile.ED25519, cut_off=bad)


# --- determinism ---------------------------------------------------------------------------------

def test_same_file_and_cut_off_give_identical_signed_attributes(dev_chain, profile):
    first, second = _sign(dev_chain, profile), _sign(dev_chain, profile)
    assert _attributes(first) == _attributes(second)
    attrs = [cms.ContentInfo.load(s)["content"]["signer_infos"][0]["signed_attrs"].dump() for s in (first, second)]
    assert attrs[0] == attrs[1]
    assert _attributes(_sign(dev_chain, profile, cut_off=CUT_OFF + timedelta(days=1))) != _attributes(first)


def test_ed25519_signature_of_the_same_file_is_byte_identical(dev_chain):
    assert _sign(dev_chain, SignatureProfile.ED25519) == _sign(dev_chain, SignatureProfile.ED25519)


# --- refusals at signing time --------------------------------------------------------------------

def test_a_certificate_that_names_another_key_is_refused_before_output(dev_chain):
    other = make_dev_chain()
    mismatched = SigningIdentity(SignatureProfile.ED25519, "cdr-export-ed25519",
                                 other.identities[SignatureProfile.ED25519].chain)
    with pytest.raises(CmsError, match="does not match its certificate"):
        sign_detached(CONTENT, identity=mismatched, signer=dev_chain.signer, signing_time=CUT_OFF)


def test_a_certificate_of_the_other_profile_is_refused(dev_chain):
    crossed = SigningIdentity(SignatureProfile.ED25519, "cdr-export-ed25519",
                              dev_chain.identities[SignatureProfile.ECDSA_P256].chain)
    with pytest.raises(CmsError, match="not a ed25519 key"):
        sign_detached(CONTENT, identity=crossed, signer=dev_chain.signer, signing_time=CUT_OFF)


# --- the independent verifier ----------------------------------------------------------------------

def test_verifier_returns_signer_and_signing_time(dev_chain, profile):
    verified = verify_detached(_sign(dev_chain, profile), CONTENT, [dev_chain.ca_cert])
    assert verified.profile == profile.value
    assert verified.signing_time == CUT_OFF
    assert verified.signer_name == f"CN={dev_chain.identities[profile].key_label} export signing," \
                                   "O=cdr-mediation local stack (DEVELOPMENT ONLY)"
    assert verified.path[-1] == dev_chain.ca_cert


def test_changed_content_byte_is_refused(dev_chain, profile):
    tampered = CONTENT[:100] + bytes([CONTENT[100] ^ 0x01]) + CONTENT[101:]
    with pytest.raises(VerificationError, match="message-digest attribute does not match"):
        verify_detached(_sign(dev_chain, profile), tampered, [dev_chain.ca_cert])


def test_changed_signature_byte_is_refused(dev_chain, profile):
    signed = _sign(dev_chain, profile)
    signature = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signature"].native
    tampered = _replace_once(signed, signature, _flip_last_byte(signature))
    with pytest.raises(VerificationError, match="signature over the signed attributes does not verify"):
        verify_detached(tampered, CONTENT, [dev_chain.ca_cert])


def test_digest_attribute_rewritten_for_other_content_is_refused(dev_chain, profile):
    # The forger swaps the file and rewrites the digest attribute to match it.
    digest = EXPECTED[profile][0]
    forged_content = CONTENT + b"one more CDR"
    signed = _sign(dev_chain, profile)
    tampered = _replace_once(signed, hashlib.new(digest, CONTENT).digest(),
                             hashlib.new(digest, forged_content).digest())
    with pytest.raises(VerificationError, match="signature over the signed attributes does not verify"):
        verify_detached(tampered, forged_content, [dev_chain.ca_cert])


def test_changed_signing_time_is_refused(dev_chain, profile):
    signed = _sign(dev_chain, profile)
    tampered = _replace_once(signed, b"260314000000Z", b"260315000000Z")
    with pytest.raises(VerificationError, match="signature over the signed attributes does not verify"):
        verify_detached(tampered, CONTENT, [dev_chain.ca_cert])


def test_wrong_trust_anchor_is_refused(dev_chain, profile):
    with pytest.raises(VerificationError, match="no certification path"):
        verify_detached(_sign(dev_chain, profile), CONTENT, [make_dev_chain().ca_cert])


def test_changed_signer_serial_is_refused(dev_chain, profile):
    signed = _sign(dev_chain, profile)
    serial = dev_chain.identities[profile].leaf["tbs_certificate"]["serial_number"].contents
    sid_serial = signed.rindex(serial)  # the SignerInfo comes after the certificates
    tampered = signed[:sid_serial] + _flip_last_byte(serial) + signed[sid_serial + len(serial):]
    with pytest.raises(VerificationError, match="0 certificates in the SignedData match the signer identifier"):
        verify_detached(tampered, CONTENT, [dev_chain.ca_cert])


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", b"not DER at all"], ids=["empty", "other", "text"])
def test_malformed_input_is_a_verification_error(dev_chain, garbage):
    with pytest.raises(VerificationError):
        verify_detached(garbage, CONTENT, [dev_chain.ca_cert])


def test_truncated_signature_file_is_refused(dev_chain):
    with pytest.raises(VerificationError, match="malformed CMS"):
        verify_detached(_sign(dev_chain, SignatureProfile.ED25519)[:-10], CONTENT, [dev_chain.ca_cert])


# --- attributes a forger with the key (or a sloppy signer) could produce -----------------------------

def _resign(dev_chain, signed: bytes, attributes_contents: bytes) -> bytes:
    """Replace the signed attributes' contents (same length) and sign them anew with the leaf key."""
    signer_info = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]
    old_contents, old_signature = signer_info["signed_attrs"].contents, signer_info["signature"].native
    to_be_signed = b"\x31" + bytes([0x81, len(attributes_contents)]) + attributes_contents
    new_signature = dev_chain.signer.sign("cdr-export-ed25519", SignatureProfile.ED25519, to_be_signed)
    return _replace_once(_replace_once(signed, old_contents, attributes_contents), old_signature, new_signature)


def test_signed_attributes_out_of_der_order_are_refused_even_when_signed(dev_chain):
    signed = _sign(dev_chain, SignatureProfile.ED25519)
    signed_attrs = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signed_attrs"]
    assert 0x80 <= len(signed_attrs.contents) <= 0xFF  # the one-byte long form _resign writes
    reordered = b"".join(reversed([attribute.dump() for attribute in signed_attrs]))
    with pytest.raises(VerificationError, match="not DER-encoded"):
        verify_detached(_resign(dev_chain, signed, reordered), CONTENT, [dev_chain.ca_cert])


def test_a_signing_time_attribute_renamed_away_is_refused(dev_chain):
    # Same bytes, but the signing-time OID (…9.5) becomes an unknown …9.126: no signing time left.
    signed = _sign(dev_chain, SignatureProfile.ED25519)
    contents = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signed_attrs"].contents
    signing_time_oid = bytes.fromhex("06092a864886f70d010905")
    renamed = _replace_once(contents, signing_time_oid, signing_time_oid[:-1] + b"\x7e")
    with pytest.raises(VerificationError, match="signed attributes lack"):
        verify_detached(_resign(dev_chain, signed, renamed), CONTENT, [dev_chain.ca_cert])


def test_a_repeated_signed_attribute_is_refused(dev_chain):
    # The content-type attribute replaced by a second message-digest of the same encoded length.
    signed = _sign(dev_chain, SignatureProfile.ED25519)
    signed_attrs = cms.ContentInfo.load(signed)["content"]["signer_infos"][0]["signed_attrs"]
    (content_type,) = [a.dump() for a in signed_attrs if a["type"].native == "content_type"]
    second_digest = b"\x30\x18" + bytes.fromhex("06092a864886f70d010904") + b"\x31\x0b\x04\x09" + bytes(9)
    assert len(second_digest) == len(content_type)
    doubled = _replace_once(signed_attrs.contents, content_type, second_digest)
    with pytest.raises(VerificationError, match="signed attribute 1.2.840.113549.1.9.4 appears twice"):
        verify_detached(_resign(dev_chain, signed, doubled), CONTENT, [dev_chain.ca_cert])


@pytest.mark.parametrize("profile", list(SignatureProfile))
def test_signing_a_file_in_chunks_gives_the_bytes_of_signing_it_whole(tmp_path, dev_chain, profile) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(CONTENT * 50_000)  # several chunks
    from_file = sign_detached_file(path, identity=dev_chain.identities[profile], signer=dev_chain.signer,
                                   signing_time=CUT_OFF)
    whole = sign_detached(CONTENT * 50_000, identity=dev_chain.identities[profile], signer=dev_chain.signer,
                          signing_time=CUT_OFF)
    if profile is SignatureProfile.ED25519:
        assert from_file == whole
    content = path.read_bytes()
    for signed in (from_file, whole):  # ECDSA draws a nonce: both must verify over the same bytes
        assert verify_detached(signed, content, [dev_chain.ca_cert]).signing_time == CUT_OFF
    with pytest.raises(VerificationError):
        verify_detached(from_file, content[:-1] + b"\x00", [dev_chain.ca_cert])


def test_verifying_a_file_in_chunks_agrees_with_verifying_its_bytes(tmp_path, dev_chain, profile) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(CONTENT * 500)  # several read chunks
    signed = _sign(dev_chain, profile, content=CONTENT * 500)
    from_file = verify_detached_file(signed, path, [dev_chain.ca_cert])
    assert from_file == verify_detached(signed, path.read_bytes(), [dev_chain.ca_cert])
    assert from_file.signing_time == CUT_OFF

    # One byte changed past the first read chunk is caught, as in the in-memory check.
    content = bytearray(path.read_bytes())
    content[(1 << 20) + 7] ^= 0x01
    path.write_bytes(content)
    with pytest.raises(VerificationError, match="message-digest attribute does not match"):
        verify_detached_file(signed, path, [dev_chain.ca_cert])
