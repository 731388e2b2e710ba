"""The API's access log never carries an MSISDN: the `msisdn` filter is replaced by its keyed
reference before the line is formatted, also when it arrives percent-encoded (which the JSON
formatter's own redaction would not recognise)."""

from __future__ import annotations

import io
import json
import logging

from aiohttp.test_utils import TestClient, TestServer

from cdr_mediation.observability.jsonlog import configure_logging
from cdr_mediation.observability.msisdn import MsisdnHasher
from cdr_mediation.portal.access_log import LOGGER, PortalAccessLog
from cdr_mediation.portal.app import create_portal

HASHER = MsisdnHasher(b"k" * 32)


def _auditor(request):
    return {"organizationalUnitName": ["auditor"], "commonName": ["auditor.example"]}


async def test_the_msisdn_filter_is_logged_as_its_reference_only():
    stream = io.StringIO()
    configure_logging(service="portal-test", level="INFO", hasher=HASHER, stream=stream)
    try:
        server = TestServer(create_portal({}, subject_of=_auditor))
        # The runner as `cdrmed portal` makes it (cli._serve_portal).
        await server.start_server(access_log_class=PortalAccessLog.with_hasher(HASHER), access_log=LOGGER)
        client = TestClient(server)
        try:
            response = await client.get("/v1/cdrs?msisdn=%2B447700900123&status=DELIVERED")
            assert response.status == 503  # no database configured: the request went through
        finally:
            await client.close()
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (access,) = [line for line in lines if line["logger"] == LOGGER.name]
    assert "447700900123" not in stream.getvalue()
    assert access["query"] == {"msisdn": HASHER.reference("+447700900123"), "status": "DELIVERED"}
    assert (access["path"], access["status"], access["role"], access["actor"]) == (
        "/v1/cdrs", 503, "auditor", "auditor.example")
