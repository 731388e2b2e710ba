"""The development PKI of the simulated HTTPS endpoint."""

from __future__ import annotations

import os
import ssl

from cryptography import x509

from cdr_mediation.stack.regulator.pki import EXPORTER_CN, ensure_dev_pki


def test_dev_pki_is_made_once_with_private_keys_unreadable_to_others(tmp_path):
    pki = ensure_dev_pki(tmp_path / "pki")
    first = pki.client_cert.read_bytes()
    assert ensure_dev_pki(tmp_path / "pki").client_cert.read_bytes() == first  # kept, not reissued
    for key in (pki.ca_key, pki.server_key, pki.client_key):
        assert os.stat(key).st_mode & 0o077 == 0
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))  # the key matches its certificate


def test_the_server_certificate_is_for_loopback_and_the_client_one_for_clients_only(tmp_path):
    pki = ensure_dev_pki(tmp_path / "pki")
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u.dotted_string for u in usage] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth only
    assert client.subject.rfc4514_string().startswith(f"CN={EXPORTER_CN}")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert client.issuer == server.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
