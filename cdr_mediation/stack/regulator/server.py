"""The regulator simulator process: one store (the drop box), one ledger, one answer book.

Both channels deliver into the drop box's `inbox/`: SFTP uploads land there directly (and the
watcher takes them), HTTPS uploads are staged there and linked under their final name. So a file
is known by name and SHA-256 whichever way it came, and the same file delivered twice (or once
per channel) is one receipt. Every receipt is answered at once by the rule in force (ACK, RAP
return, or silence); a test may command a late answer for files that got none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdr_mediation.infra.delivery.files import AnswerKind, response_name
from cdr_mediation.stack.regulator.answers import (
    ack_document,
    file_digest,
    list_responses,
    rejection_file,
    write_atomically,
)
from cdr_mediation.stack.regulator.dropbox import watch_inbox
from cdr_mediation.stack.regulator.ledger import Ledger, Receipt
from cdr_mediation.stack.regulator.script import (
    DEFAULT_RULE,
    Answer,
    AnswerBook,
    AnswerRule,
    Arrival,
    classify_arrival,
    rejection_terms,
)

log = logging.getLogger("cdr_mediation.regulator")


class RegulatorServer:
    """`config` is what the stack component writes to regulator.json (paths, ports, PKI files)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.inbox = Path(config["inbox"])
        self.outbox = Path(config["outbox"])
        self.ledger = Ledger(Path(config["ledger"]))
        self.rules_path = Path(config["rules"])
        # The commanded rules outlive a restart of the simulator (a test may restart it).
        self.book = (AnswerBook.from_json(json.loads(self.rules_path.read_text())) if self.rules_path.exists()
                     else AnswerBook(AnswerRule.from_json(config.get("default_answer", DEFAULT_RULE.as_json()))))

    # Receiving. Everything from "is this name known" to "recorded and linked into the inbox"
    # runs without an await, so the HTTPS handler and the drop-box watcher (same event loop)
    # never both take the same file.

    def is_known(self, file_name: str) -> bool:
        held = self.ledger.get(file_name)
        return held is not None and not held.returned

    def take_from_inbox(self, name: str) -> Receipt:
        """Record a file that arrived over SFTP, and answer it."""
        sha256, size = file_digest(self.inbox / name)
        receipt = self.ledger.receive(name, sha256, size, channel="sftp", client=self.config.get("sftp_user", ""))
        log.info("received %s over sftp: sha256 %s, receipt %d", name, sha256, receipt.sequence)
        return self._answer(receipt, self.book.rule_for(name))

    def store_upload(self, name: str, staged: Path, sha256: str, size: int, client: str) -> tuple[Arrival, Receipt]:
        """Decide an HTTPS upload already written (and checked against its digest) to `staged`."""
        if not self.is_known(name) and (self.inbox / name).exists():
            self.take_from_inbox(name)  # delivered over SFTP a moment ago, not yet scanned
        held = self.ledger.get(name) if self.is_known(name) else None
        arrival = classify_arrival(held.sha256 if held else None, sha256)
        if arrival is not Arrival.NEW:
            staged.unlink()
            assert held is not None
            return arrival, (self.ledger.redelivered(name) if arrival is Arrival.REDELIVERY else held)
        receipt = self.ledger.receive(name, sha256, size, channel="https", client=client)
        os.link(staged, self.inbox / name)  # never replaces: the name was free (checked above)
        staged.unlink()
        log.info("received %s over https from %s: sha256 %s, receipt %d", name, client, sha256, receipt.sequence)
        return arrival, self._answer(receipt, self.book.rule_for(name))

    # Answering.

    def _answer(self, receipt: Receipt, rule: AnswerRule) -> Receipt:
        now = dt.datetime.now(dt.timezone.utc)
        if rule.answer is Answer.NONE:
            return self.ledger.answered(receipt.file, answer=rule.answer.value, response=None, error=None)
        try:
            if rule.answer is Answer.ACK:
                data, kind = ack_document(receipt, now=now), AnswerKind.ACK
            else:
                data = rejection_file(rejection_terms(rule, receipt.file), file_name=receipt.file,
                                      sha256=receipt.sha256, now=now,
                                      rap_sequence_number=self.ledger.rejections_written() + 1)
                kind = AnswerKind.RAP
        except Exception as exc:  # noqa: BLE001 - recorded on the receipt for the test to see
            log.warning("cannot answer %s: %s", receipt.file, exc)
            return self.ledger.answered(receipt.file, answer=rule.answer.value, response=None, error=str(exc))
        name = response_name(receipt.file, kind)
        write_atomically(self.outbox / name, data)
        log.info("answered %s with %s", receipt.file, name)
        answered = self.ledger.answered(receipt.file, answer=rule.answer.value, response=name, error=None)
        if kind is AnswerKind.RAP:
            self._return(receipt.file)
            self._return(f"{receipt.file}.p7s")
            answered = self.ledger.get(receipt.file)
        return answered

    def _return(self, file_name: str) -> None:
        """Take a rejected file (or its signature) out of the inbox, kept under `returned/` with
        its receipt number, so the corrected file can be delivered under the same name."""
        held = self.ledger.get(file_name)
        if held is None and (self.inbox / file_name).exists():
            self.take_from_inbox(file_name)  # arrived in the same scan, not taken yet
            held = self.ledger.get(file_name)
        if held is None or held.returned:
            return
        returned = self.inbox.parent / "returned"
        returned.mkdir(exist_ok=True)
        source = self.inbox / file_name
        if source.exists():
            os.replace(source, returned / f"{file_name}.{held.sequence}")
        self.ledger.returned(file_name)
        log.info("returned %s (receipt %d)", file_name, held.sequence)

    def add_rule(self, rule: AnswerRule, *, apply_to_received: bool) -> list[Receipt]:
        """Add a rule; with `apply_to_received`, also answer matching files that got no answer yet."""
        self._set_book(self.book.with_rule(rule))
        if not apply_to_received:
            return []
        return [self._answer(r, rule) for r in self.ledger.receipts() if rule.matches(r.file) and r.response is None]

    def set_default(self, rule: AnswerRule) -> None:
        self._set_book(self.book.with_default(rule))

    def clear_rules(self) -> None:
        self._set_book(self.book.cleared())

    def _set_book(self, book: AnswerBook) -> None:
        self.book = book
        write_atomically(self.rules_path, json.dumps(book.as_json(), indent=2).encode())

    def responses(self, file_name: str | None) -> list[dict[str, Any]]:
        return list_responses(self.outbox, file_name)

    # The process.

    async def run(self) -> None:
        from aiohttp import web

        from cdr_mediation.stack.regulator.api import control_app, delivery_app
        from cdr_mediation.stack.regulator.tls_front import PipedClients, TlsFront, server_tls_context

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        host = self.config["host"]
        clients = PipedClients()
        api = web.AppRunner(delivery_app(self, clients.client_of), access_log=None)
        await api.setup()
        await web.TCPSite(api, "127.0.0.1", 0).start()  # reached only through the TLS front
        tls = server_tls_context(ca_cert=self.config["ca_cert"], server_cert=self.config["server_cert"],
                                 server_key=self.config["server_key"])
        front = TlsFront(tls, host, self.config["https_port"], api.addresses[0][1], clients)
        front.start()
        control = web.AppRunner(control_app(self), access_log=None)
        await control.setup()
        await web.TCPSite(control, host, self.config["control_port"]).start()
        watcher = asyncio.create_task(watch_inbox(self.inbox, self.is_known, self.take_from_inbox,
                                                  interval_s=float(self.config.get("poll_interval_s", 0.1))))
        log.info("regulator simulator: https %s:%s, control %s:%s, inbox %s", host, self.config["https_port"],
                 host, self.config["control_port"], self.inbox)
        try:
            await stopping.wait()
        finally:
            watcher.cancel()
            front.close()
            for runner in (control, api):
                await runner.cleanup()
