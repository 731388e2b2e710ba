"""The parts of the mutual-TLS front that need no socket."""

from __future__ import annotations

from cdr_mediation.stack.regulator.tls_front import PipedClients, common_name


def test_the_common_name_is_read_from_a_peer_certificate():
    peer = {"subject": ((("organizationName", "cdr-mediation local stack (development only)"),),
                        (("commonName", "cdr-exporter"),))}
    assert common_name(peer) == "cdr-exporter"
    assert common_name({}) == ""


def test_only_connections_piped_by_the_front_have_a_client():
    clients = PipedClients()
    clients.add(50123, "cdr-exporter")
    assert clients.client_of(50123) == "cdr-exporter"
    assert clients.client_of(50124) is None  # straight to the API's loopback port: refused
    clients.remove(50123)
    assert clients.client_of(50123) is None
