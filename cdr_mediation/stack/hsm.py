"""A SoftHSM2 token holding the export signing keys (a library, not a server: no process).

`softhsm2-util` initialises the token; the keys are generated inside it by a child process
(`python -m cdr_mediation.stack.hsm`), because SoftHSM2 reads SOFTHSM2_CONF once per process and
the caller may already have loaded it for another token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
                                               "keys": {p.value: l for p, l in KEY_LABELS.items()}})
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
        return Health(not bad, endpoint, f"sign/verify failed: {bad}" if bad else "")

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
    """Sign a probe with each key in the token and verify it with the public key alone."""
    probe = b"cdr-mediation hsm health probe"
    with HsmSigner(hsm.hsm_config()) as signer:
        return {
            label: verify(signer.public_key(label, profile), profile, probe, signer.sign(label, profile, probe))
            for profile, label in KEY_LABELS.items()
        }


if __name__ == "__main__":
    from cdr_mediation.stack.layout import StateDir

    action, root = sys.argv[1], Path(sys.argv[2])
    component = Hsm(StateDir(root))
    print(json.dumps(provision(component) if action == "provision" else check(component)))
