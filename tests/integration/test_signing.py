"""Export signing with the stack's SoftHSM2 token and certificate chain, checked as an auditor would.

Signing runs in a child process (SoftHSM2 reads SOFTHSM2_CONF once per process); OpenSSL and the
independent verifier check the results from files, as the regulator receives them.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cdr_mediation.infra.cms_verify import (
    RebuildMatch,
    VerificationError,
    compare_rebuilt,
    load_trust_anchors,
    verify_checkpoint,
    verify_detached,
)

CUT_OFF = "2026-03-14T00:00:00+00:00"
CHECKPOINT = b'{"chain_seq_first":1,"chain_seq_last":3,"file_seq":7,"head_hash":"' + b"ab" * 32 + b'"}'

SIGN_IN_HSM = """
import json, sys
from datetime import datetime
from pathlib import Path
from cdr_mediation.infra.cms import SigningIdentity, sign_checkpoint, sign_detached
from cdr_mediation.infra.hsm import HsmConfig, HsmSigner, SignatureProfile
from cdr_mediation.stack.hsm import KEY_LABELS

env, certs, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
cut_off = datetime.fromisoformat(sys.argv[4])
config = HsmConfig(env["CDR_HSM_MODULE"], env["CDR_HSM_TOKEN_LABEL"], env["CDR_HSM_PIN"], env["CDR_HSM_SOFTHSM2_CONF"])
content = (out / "export.zip").read_bytes()
checkpoint = (out / "checkpoint.json").read_bytes()
key_ids = {}
with HsmSigner(config) as signer:
    for profile in SignatureProfile:
        identity = SigningIdentity.from_pem_file(profile, KEY_LABELS[profile], Path(certs[profile.value]))
        for run in (1, 2):
            (out / f"{profile.value}-{run}.p7s").write_bytes(
                sign_detached(content, identity=identity, signer=signer, signing_time=cut_off))
            signed = sign_checkpoint(checkpoint, identity=identity, signer=signer)
            (out / f"{profile.value}-checkpoint-{run}.sig").write_bytes(signed.signature)
        key_ids[profile.value] = signed.key_id
print(json.dumps(key_ids))
"""


def _export_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("CDATRA0000007.tap", date_time=(2026, 3, 14, 0, 0, 0))
        archive.writestr(info, b"TAP 3.12 transfer batch " * 400)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hsm_manifest(stack) -> dict:
    return stack.state.read_manifest()["hsm"]


@pytest.fixture(scope="module")
def signed(stack_env, hsm_manifest, tmp_path_factory) -> dict:
    """Both profiles, each signed twice in the token: the files an exporter would archive."""
    out = tmp_path_factory.mktemp("signed")
    (out / "export.zip").write_bytes(_export_zip())
    (out / "checkpoint.json").write_bytes(CHECKPOINT)
    result = subprocess.run([sys.executable, "-c", SIGN_IN_HSM, json.dumps(stack_env),
                             json.dumps(hsm_manifest["certs"]), str(out), CUT_OFF],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {"dir": out, "key_ids": json.loads(result.stdout), "ca": Path(hsm_manifest["ca_cert"]),
            "certs": {profile: Path(path) for profile, path in hsm_manifest["certs"].items()}}


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def profile_name(request) -> str:
    return request.param


def _openssl_cms_verify(signature: Path, content: Path, ca: Path) -> subprocess.CompletedProcess:
    # The command docs/signing.md gives auditors (only our CA trusted, not the system store).
    return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
                           "-content", str(content), "-CAfile", str(ca), "-no-CApath", "-no-CAstore",
                           "-purpose", "any", "-out", os.devnull],
                          capture_output=True, text=True, timeout=30)


def _flip_byte(source: Path, target: Path, offset: int) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def _signature_offset(signature_der: bytes) -> int:
    """Offset of the last byte of the SignerInfo's signature value (the DER ends with it)."""
    value = cms.ContentInfo.load(signature_der)["content"]["signer_infos"][0]["signature"].native
    assert signature_der.endswith(value)  # no unsigned attributes follow it
    return len(signature_der) - 1


# --- the chain the stack provisions --------------------------------------------------------------

def test_stack_issues_a_dev_root_and_one_leaf_per_token_key(stack, hsm_manifest):
    hsm_dir = stack.state.root / "hsm"
    ca = x509.load_pem_x509_certificate(Path(hsm_manifest["ca_cert"]).read_bytes())
    assert set(hsm_manifest["certs"]) == {"ed25519", "ecdsa-p256"}
    assert stat.S_IMODE((hsm_dir / "dev-root-ca.key.pem").stat().st_mode) == 0o600
    assert "DEVELOPMENT ONLY" in ca.subject.rfc4514_string()
    for profile, path in hsm_manifest["certs"].items():
        leaf = x509.load_pem_x509_certificate(Path(path).read_bytes())
        leaf.verify_directly_issued_by(ca)
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        assert hsm_manifest["keys"][profile] in leaf.subject.rfc4514_string()


def test_the_stack_env_names_the_certificates_the_settings_load(stack_env, hsm_manifest):
    from cdr_mediation.infra.cms import SigningIdentity
    from cdr_mediation.infra.hsm import SignatureProfile
    from cdr_mediation.settings import Settings

    settings = Settings.load(stack_env)
    assert settings.export_signature_profile == "ed25519"  # the default profile
    assert str(settings.hsm_ca_cert) == hsm_manifest["ca_cert"]
    bundles = {SignatureProfile.ED25519: settings.hsm_cert_ed25519, SignatureProfile.ECDSA_P256: settings.hsm_cert_ecdsa_p256}
    anchors = load_trust_anchors(settings.hsm_ca_cert.read_bytes())
    for profile, bundle in bundles.items():
        identity = SigningIdentity.from_pem_file(profile, hsm_manifest["keys"][profile.value], bundle)
        leaf = x509.load_der_x509_certificate(identity.chain[0])
        assert any(leaf.issuer == anchor.subject for anchor in anchors)


def test_stack_up_again_keeps_the_same_certificates(stack, hsm_manifest):
    files = [Path(hsm_manifest["ca_cert"]), *map(Path, hsm_manifest["certs"].values()),
             stack.state.root / "hsm" / "dev-root-ca.key.pem"]
    before = {path: path.read_bytes() for path in files}
    stack.components["hsm"].start()
    assert {path: path.read_bytes() for path in files} == before
    assert stack.components["hsm"].health().healthy


def test_leaf_certificates_hold_the_token_public_keys(signed):
    # Each CMS made in the token verifies with its leaf's key: the leaf binds the token key.
    content = (signed["dir"] / "export.zip").read_bytes()
    anchors = load_trust_anchors(signed["ca"].read_bytes())
    for profile, path in signed["certs"].items():
        verified = verify_detached((signed["dir"] / f"{profile}-1.p7s").read_bytes(), content, anchors)
        assert _spki(verified.signer) == _spki(x509.load_pem_x509_certificate(path.read_bytes()))


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


# --- ECDSA P-256: OpenSSL is the auditor's tool ----------------------------------------------------

def test_p256_cms_verifies_with_openssl(signed):
    result = _openssl_cms_verify(signed["dir"] / "ecdsa-p256-1.p7s", signed["dir"] / "export.zip", signed["ca"])
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


def test_openssl_refuses_p256_cms_after_one_zip_byte_changes(signed, tmp_path):
    tampered = _flip_byte(signed["dir"] / "export.zip", tmp_path / "export.zip", 200)
    result = _openssl_cms_verify(signed["dir"] / "ecdsa-p256-1.p7s", tampered, signed["ca"])
    assert result.returncode != 0 and "Verification failure" in result.stderr
    assert "CMS_SignerInfo_verify_content" in result.stderr  # the content check, not the chain


def test_openssl_refuses_p256_cms_after_one_signature_byte_changes(signed, tmp_path):
    original = signed["dir"] / "ecdsa-p256-1.p7s"
    tampered = _flip_byte(original, tmp_path / "sig.p7s", _signature_offset(original.read_bytes()))
    result = _openssl_cms_verify(tampered, signed["dir"] / "export.zip", signed["ca"])
    assert result.returncode != 0 and "Verification failure" in result.stderr
    assert "CMS_SignerInfo_verify:" in result.stderr  # the signature over the attributes


def test_openssl_refuses_p256_cms_under_another_root(signed, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    from cdr_mediation.stack.hsm import dev_root_ca

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(dev_root_ca(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.PEM))
    result = _openssl_cms_verify(signed["dir"] / "ecdsa-p256-1.p7s", signed["dir"] / "export.zip", other_ca)
    assert result.returncode != 0 and "unable to get local issuer certificate" in result.stderr


def test_p256_rebuild_differs_only_in_the_signature_value(signed):
    # SoftHSM2's CKM_ECDSA draws a random nonce: two signatures of the same file are different
    # bytes, so a rebuild compares everything but the signature value (docs/signing.md).
    first, second = ((signed["dir"] / f"ecdsa-p256-{run}.p7s").read_bytes() for run in (1, 2))
    content = (signed["dir"] / "export.zip").read_bytes()
    assert first != second
    match = compare_rebuilt(first, second, content, load_trust_anchors(signed["ca"].read_bytes()))
    assert match is RebuildMatch.SIGNATURE_REDRAWN


# --- Ed25519: the independent verifier (OpenSSL 3.0 cannot verify an Ed25519 CMS) -----------------

def test_ed25519_cms_signed_twice_is_byte_identical(signed):
    first, second = ((signed["dir"] / f"ed25519-{run}.p7s").read_bytes() for run in (1, 2))
    assert first == second
    content = (signed["dir"] / "export.zip").read_bytes()
    assert compare_rebuilt(first, second, content, load_trust_anchors(signed["ca"].read_bytes())) \
        is RebuildMatch.IDENTICAL


def test_ed25519_cms_passes_the_independent_verifier(signed):
    verified = verify_detached((signed["dir"] / "ed25519-1.p7s").read_bytes(),
                               (signed["dir"] / "export.zip").read_bytes(),
                               load_trust_anchors(signed["ca"].read_bytes()))
    assert verified.profile == "ed25519"
    assert verified.signing_time.isoformat() == CUT_OFF
    assert verified.signer_name.startswith("CN=cdr-export-ed25519 export signing")


def test_independent_verifier_refuses_one_changed_zip_byte(signed, profile_name):
    content = bytearray((signed["dir"] / "export.zip").read_bytes())
    content[200] ^= 0x01
    with pytest.raises(VerificationError, match="message-digest attribute does not match"):
        verify_detached((signed["dir"] / f"{profile_name}-1.p7s").read_bytes(), bytes(content),
                        load_trust_anchors(signed["ca"].read_bytes()))


def test_independent_verifier_refuses_one_changed_signature_byte(signed, profile_name, tmp_path):
    original = signed["dir"] / f"{profile_name}-1.p7s"
    tampered = _flip_byte(original, tmp_path / "sig.p7s", _signature_offset(original.read_bytes()))
    with pytest.raises(VerificationError, match="signature over the signed attributes does not verify"):
        verify_detached(tampered.read_bytes(), (signed["dir"] / "export.zip").read_bytes(),
                        load_trust_anchors(signed["ca"].read_bytes()))


def _documented_ed25519_procedure() -> str:
    """The OpenSSL-only procedure docs/signing.md gives auditors, exactly as written there."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "signing.md").read_text()
    (script,) = re.findall(r"```sh\n(# verify-ed25519-cms\.sh .*?)```", docs, flags=re.S)
    return script


def _run_documented_procedure(signature: Path, content: Path, ca: Path, workdir: Path):
    return subprocess.run(["bash", "-c", _documented_ed25519_procedure(), "verify-ed25519-cms.sh",
                           str(signature), str(content), str(ca)],
                          cwd=workdir, capture_output=True, text=True, timeout=60)


def test_documented_openssl_procedure_verifies_the_ed25519_cms(signed, tmp_path):
    result = _run_documented_procedure(signed["dir"] / "ed25519-1.p7s", signed["dir"] / "export.zip",
                                       signed["ca"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout and "signer.pem: OK" in result.stdout


def test_documented_openssl_procedure_refuses_a_changed_zip_or_signature_byte(signed, tmp_path):
    zip_path, signature = signed["dir"] / "export.zip", signed["dir"] / "ed25519-1.p7s"
    changed_zip = _flip_byte(zip_path, tmp_path / "export.zip", 200)
    result = _run_documented_procedure(signature, changed_zip, signed["ca"], tmp_path)
    assert result.returncode != 0 and "differ" in result.stdout  # cmp: the digest attribute
    changed_signature = _flip_byte(signature, tmp_path / "sig.p7s", _signature_offset(signature.read_bytes()))
    result = _run_documented_procedure(changed_signature, zip_path, signed["ca"], tmp_path)
    assert result.returncode != 0 and "Signature Verification Failure" in result.stdout


# --- checkpoint signatures: plain OpenSSL for both profiles ----------------------------------------

def _public_key_pem(certificate: Path, tmp_path: Path) -> Path:
    """What an auditor runs: the public key out of the signer certificate."""
    target = tmp_path / f"{certificate.stem}.pub.pem"
    subprocess.run(["openssl", "x509", "-in", str(certificate), "-pubkey", "-noout", "-out", str(target)],
                   check=True, capture_output=True, timeout=30)
    return target


def _openssl_checkpoint_verify(profile: str, public_key: Path, checkpoint: Path, signature: Path):
    if profile == "ed25519":
        command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public_key), "-rawin",
                   "-in", str(checkpoint), "-sigfile", str(signature)]
    else:
        command = ["openssl", "dgst", "-sha256", "-verify", str(public_key), "-signature", str(signature),
                   str(checkpoint)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_checkpoint_signature_verifies_with_openssl_and_refuses_a_changed_byte(signed, profile_name, tmp_path):
    public_key = _public_key_pem(signed["certs"][profile_name], tmp_path)
    checkpoint, signature = signed["dir"] / "checkpoint.json", signed["dir"] / f"{profile_name}-checkpoint-1.sig"
    result = _openssl_checkpoint_verify(profile_name, public_key, checkpoint, signature)
    assert result.returncode == 0, result.stdout + result.stderr
    tampered = _flip_byte(checkpoint, tmp_path / "checkpoint.json", 30)
    assert _openssl_checkpoint_verify(profile_name, public_key, tampered, signature).returncode != 0


def test_checkpoint_key_id_is_what_openssl_computes_from_the_certificate(signed, profile_name, tmp_path):
    public_key = _public_key_pem(signed["certs"][profile_name], tmp_path)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(public_key), "-outform", "DER"],
                         check=True, capture_output=True, timeout=30).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=der, check=True,
                            capture_output=True, timeout=30).stdout.split()[0].decode()
    assert signed["key_ids"][profile_name] == digest
    certificate = x509.load_pem_x509_certificate(signed["certs"][profile_name].read_bytes())
    signature = (signed["dir"] / f"{profile_name}-checkpoint-1.sig").read_bytes()
    assert verify_checkpoint(CHECKPOINT, signature, digest, certificate) == profile_name


def test_ed25519_checkpoint_signature_is_deterministic_in_the_token(signed):
    first, second = ((signed["dir"] / f"ed25519-checkpoint-{run}.sig").read_bytes() for run in (1, 2))
    assert first == second and len(first) == 64


# --- provisioning after the token changed (last: it replaces a leaf file) ---------------------------

def test_a_leaf_that_no_longer_matches_its_token_key_is_reissued(stack, hsm_manifest):
    ca_path, ed25519_path, p256_path = (Path(hsm_manifest["ca_cert"]), Path(hsm_manifest["certs"]["ed25519"]),
                                        Path(hsm_manifest["certs"]["ecdsa-p256"]))
    kept = {path: path.read_bytes() for path in (ca_path, ed25519_path)}
    original_p256 = x509.load_pem_x509_certificate(p256_path.read_bytes())
    # A leaf for the Ed25519 key under the P-256 name: what a re-initialised token looks like.
    p256_path.write_bytes(ed25519_path.read_bytes())
    assert not stack.components["hsm"].health().healthy
    stack.components["hsm"].start()
    reissued = x509.load_pem_x509_certificate(p256_path.read_bytes())
    assert _spki(reissued) == _spki(original_p256) and reissued.serial_number != original_p256.serial_number
    reissued.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_path.read_bytes()))
    assert {path: path.read_bytes() for path in kept} == kept
    assert stack.components["hsm"].health().healthy
