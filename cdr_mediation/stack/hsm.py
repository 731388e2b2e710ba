"""A SoftHSM2 token holding the export signing keys (a library, not a server: no process).

`softhsm2-util` initialises the token; the keys are generated inside it by a child process
(`python -m cdr_mediation.stack.hsm`), because SoftHSM2 reads SOFTHSM2_CONF once per process and
the caller may already have loaded it for another token.

The same child also issues the certificate chain the CMS signatures carry (docs/signing.md): a
DEVELOPMENT root CA whose private key is a plain file in this state directory (mode 0600; never
use it outside a local stack), and one leaf certificate per token key, binding the public key read
from the token. Production replaces both with certificates from the operator's own PKI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from cdr_mediation.infra.hsm import (
    CURVE_OID,
    DEFAULT_MODULE,
    HsmConfig,
    HsmSigner,
    SignatureProfile,
    verify,
)
from cdr_mediation.stack.component import Component, require_binary
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError

TOKEN_LABEL = "cdr-signing"
KEY_LABELS = {
    SignatureProfile.ED25519: "cdr-export-ed25519",
    SignatureProfile.ECDSA_P256: "cdr-export-p256",
}


class Hsm(Component):
    name = "hsm"

    @property
    def conf_path(self) -> Path:
        return self.dir / "softhsm2.conf"

    @property
    def ca_cert_path(self) -> Path:
        return self.dir / "dev-root-ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.dir / "dev-root-ca.key.pem"

    def cert_paths(self) -> dict[SignatureProfile, Path]:
        """One PEM per token key: the leaf (then intermediates, none in the dev chain)."""
        return {profile: self.dir / f"{label}.pem" for profile, label in KEY_LABELS.items()}

    def hsm_config(self) -> HsmConfig:
        return HsmConfig(
            module_path=self.config.get("module", DEFAULT_MODULE),
            token_label=TOKEN_LABEL,
            pin=self.state.secret("hsm_user_pin", nbytes=8),
            softhsm2_conf=str(self.conf_path),
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf_path)}

    def start(self) -> None:
        if not Path(DEFAULT_MODULE).exists():
            raise StackError(
                f"SoftHSM2 PKCS#11 module {DEFAULT_MODULE} not found; install the Debian package 'softhsm2'"
            )
        util = require_binary("softhsm2-util", package="softhsm2")
        tokens = self.dir / "tokens"
        tokens.mkdir(exist_ok=True)
        self.conf_path.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
            "slots.removable = false\n"
        )
        self.state.update_manifest(self.name, {"module": DEFAULT_MODULE, "token_label": TOKEN_LABEL,
                                               "conf": str(self.conf_path),
                                               "keys": {p.value: l for p, l in KEY_LABELS.items()},
                                               "ca_cert": str(self.ca_cert_path),
                                               "certs": {p.value: str(path) for p, path in self.cert_paths().items()}})
        if not any(tokens.iterdir()):
            result = subprocess.run(
                [util, "--init-token", "--free", "--label", TOKEN_LABEL,
                 "--so-pin", self.state.secret("hsm_so_pin", nbytes=8),
                 "--pin", self.state.secret("hsm_user_pin", nbytes=8)],
                env=self._env(), capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise StackError(f"softhsm2-util --init-token failed: {result.stderr or result.stdout}")
        self._child("provision")
        health = self.health()
        if not health.healthy:
            raise StackError(f"HSM token not usable after provisioning: {health.detail}")

    def _child(self, action: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "cdr_mediation.stack.hsm", action, str(self.state.root)],
            env=self._env(), capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise StackError(f"HSM {action}: {result.stderr.strip().splitlines()[-1:] or result.stdout}")
        return json.loads(result.stdout)

    def health(self) -> Health:
        endpoint = f"pkcs11:token={TOKEN_LABEL}"
        if not self.conf_path.exists():
            return Health(False, endpoint, "token not initialised")
        try:
            report = self._child("check")
        except (StackError, subprocess.TimeoutExpired, ValueError) as exc:
            return Health(False, endpoint, str(exc))
        bad = [name for name, ok in report.items() if not ok]
        return Health(not bad, endpoint, f"sign, then verify with the certificate's key, failed: {bad}" if bad else "")

    def stop(self) -> None:
        """Nothing runs: the token is files, used in-process through the PKCS#11 library."""


def provision(hsm: Hsm) -> dict:
    """Generate each missing signing key pair inside the token (never exportable)."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    config = hsm.hsm_config()
    lib = pkcs11.lib(config.module_path)
    token = lib.get_token(token_label=config.token_label)
    created = {}
    with token.open(user_pin=config.pin, rw=True) as session:
        for profile, label in KEY_LABELS.items():
            if list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})):
                created[label] = False
                continue
            key_type, mechanism = (
                (KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
                if profile is SignatureProfile.ED25519
                else (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN)
            )
            session.generate_keypair(
                key_type,
                mechanism=mechanism,
                public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(CURVE_OID[profile]),
                                 Attribute.LABEL: label, Attribute.TOKEN: True, Attribute.VERIFY: True},
                private_template={Attribute.LABEL: label, Attribute.TOKEN: True, Attribute.PRIVATE: True,
                                  Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                                  Attribute.SIGN: True},
                store=True,
            )
            created[label] = True
    return created


def check(hsm: Hsm) -> dict:
    """Sign a probe with each key in the token and verify it with the key its certificate names."""
    from cryptography import x509

    probe = b"cdr-mediation hsm health probe"
    report = {}
    with HsmSigner(hsm.hsm_config()) as signer:
        for profile, label in KEY_LABELS.items():
            try:
                public_key = x509.load_pem_x509_certificate(hsm.cert_paths()[profile].read_bytes()).public_key()
            except (OSError, ValueError):
                report[label] = False  # no usable certificate: nobody could verify this key's signatures
                continue
            report[label] = verify(public_key, profile, probe, signer.sign(label, profile, probe))
    return report


# --- The development certificate chain ---------------------------------------------------------

# Fixed validity, so issuing does not read the clock and replays of any past day verify: the
# verifier checks certificates at the signing time, which is a file's cut-off.
DEV_VALIDITY = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))
DEV_ORGANISATION = "cdr-mediation local stack (DEVELOPMENT ONLY)"


def dev_root_ca(ca_key):
    """A self-signed root for the local stack: may sign leaves only (path length 0)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, "cdr-mediation DEV root CA")])
    public_key = ca_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(DEV_VALIDITY[0]).not_valid_after(DEV_VALIDITY[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def dev_leaf_certificate(ca_key, ca_cert, public_key, key_label: str):
    """A signing certificate for a key held in the token (only its public half is needed here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"{key_label} export signing")]))
        .issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(DEV_VALIDITY[0]).not_valid_after(DEV_VALIDITY[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Export signatures are evidence: digitalSignature plus nonRepudiation (contentCommitment).
        .add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(**granted: bool):
    from cryptography import x509

    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: granted.get(usage, False) for usage in usages})


def provision_certificates(hsm: Hsm) -> dict:
    """Issue whatever is missing or stale; keep every file that still matches (idempotent)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issued = {}
    if hsm.ca_key_path.exists():
        ca_key = serialization.load_pem_private_key(hsm.ca_key_path.read_bytes(), password=None)
        os.chmod(hsm.ca_key_path, 0o600)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _write_atomically(hsm.ca_key_path, ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), mode=0o600)
    ca_cert = _load_certificate(hsm.ca_cert_path)
    issued["ca"] = ca_cert is None or _spki(ca_cert.public_key()) != _spki(ca_key.public_key())
    if issued["ca"]:
        ca_cert = dev_root_ca(ca_key)
        _write_atomically(hsm.ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    with HsmSigner(hsm.hsm_config()) as signer:
        for profile, path in hsm.cert_paths().items():
            label = KEY_LABELS[profile]
            token_key = signer.public_key(label, profile)
            leaf = _load_certificate(path)
            if leaf is not None and _spki(leaf.public_key()) == _spki(token_key) and _issued_by(leaf, ca_cert):
                issued[label] = False
                continue
            leaf = dev_leaf_certificate(ca_key, ca_cert, token_key, label)
            _write_atomically(path, leaf.public_bytes(serialization.Encoding.PEM), mode=0o644)
            issued[label] = True
    return issued


def _load_certificate(path: Path):
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _spki(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued_by(certificate, issuer) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Readers (and a crash) see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # before any byte is written: O_CREAT's mode does not apply to a leftover tmp file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    from cdr_mediation.stack.layout import StateDir

    action, root = sys.argv[1], Path(sys.argv[2])
    component = Hsm(StateDir(root))
    if action == "provision":
        print(json.dumps({"keys": provision(component), "certificates": provision_certificates(component)}))
    else:
        print(json.dumps(check(component)))
