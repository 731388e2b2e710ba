"""`cdrmed stack env`: what it exports must be settings the system knows (unknown CDR_* is refused)."""

from __future__ import annotations

import pytest

from cdr_mediation.settings import Settings
from cdr_mediation.stack.manager import COMPONENTS, Stack
from cdr_mediation.stack.process import StackError

# What each component's `start` records in stack.json, as far as `settings_env` reads it.
MANIFEST = {
    "nats": {"url": "nats://127.0.0.1:4222"},
    "kafka": {"bootstrap": "127.0.0.1:9092"},
    "postgres": {"port": 5432},
    "hsm": {"certs": {"ed25519": "/s/hsm/ed25519.pem", "ecdsa-p256": "/s/hsm/p256.pem"}, "ca_cert": "/s/hsm/ca.pem"},
    "sftp": {"host": "127.0.0.1", "port": 2222, "user": "atra", "client_key": "/s/sftp/client_ed25519_key",
             "known_hosts": "/s/sftp/known_hosts", "remote_dir": "inbox"},
    "s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "cdr-archive", "region": "us-east-1"},
    "regulator": {"url": "https://127.0.0.1:8443", "ca_cert": "/s/regulator/pki/ca.pem",
                  "client_cert": "/s/regulator/pki/client.pem", "client_key": "/s/regulator/pki/client.key"},
}


@pytest.fixture()
def started_stack(tmp_path):
    stack = Stack(tmp_path / "state")
    for component, values in MANIFEST.items():
        stack.state.update_manifest(component, values)
    return stack


def test_every_component_is_declared_once():
    names = [component.name for component in COMPONENTS]
    assert sorted(names) == sorted(MANIFEST) and len(set(names)) == len(names)


def test_the_exported_environment_is_a_valid_configuration(started_stack):
    env = started_stack.settings_env()
    settings = Settings.load(env)  # raises on any CDR_* name the settings do not know
    assert settings.delivery_method == "sftp"
    assert settings.kafka_idempotent_producer is False  # Tansu refuses InitProducerId
    assert settings.https_url == "https://127.0.0.1:8443"
    assert (str(settings.https_client_cert), str(settings.https_client_key), str(settings.https_ca_cert)) == (
        "/s/regulator/pki/client.pem", "/s/regulator/pki/client.key", "/s/regulator/pki/ca.pem")
    # Either channel can be chosen against the local stack without further settings.
    assert Settings.load({**env, "CDR_DELIVERY_METHOD": "https"}).delivery_method == "https"


def test_a_stack_never_started_with_the_regulator_says_so(tmp_path):
    stack = Stack(tmp_path / "state")
    for component, values in MANIFEST.items():
        if component != "regulator":
            stack.state.update_manifest(component, values)
    with pytest.raises(StackError, match=r"never been started \(\['regulator'\]\)"):
        stack.settings_env()
