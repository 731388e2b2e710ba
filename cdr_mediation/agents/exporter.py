"""The exporter agent: a closed day → its export file, built, signed and delivered (issue 6).

It consumes `day.closed.v1` and moves each day's export along the lifecycle
(`domain/export_lifecycle.py`), recording every step in PostgreSQL (`infra/postgres/export_store.py`):

* PENDING, recorded once per closed day (the record again is a no-op);
* → BUILT: `agents/export_build.py` writes the ZIP (data file + checkpoint) into the export
  directory; the step records the ZIP's SHA-256 and the checkpoint;
* → SIGNED: the HSM signs the ZIP (detached CMS, signing time = the cut-off) and the checkpoint
  (raw signature); both are checked against the trust anchor before the step is recorded. While
  the HSM is unavailable the export waits in BUILT and the step is retried with backoff.
* → DELIVERED: `NAME.zip.p7s`, then `NAME.zip`, go to the regulator over the channel of
  `CDR_DELIVERY_METHOD` (`agents/export_delivery.py` says what travels and why); the step
  records the channel, the remote names, the SHA-256 of what was delivered and the adapter's
  outcome. The receiver already holding these bytes (a crash between upload and record) counts
  as delivered. While the endpoint is down the export waits in SIGNED and delivery is retried
  with backoff; a permanent refusal (access refused, other bytes under the name) is logged
  critical and counted, and the export is left in SIGNED without further retries (MANUAL at the
  deadline is a later step).

Acknowledgement and archiving are the next steps (not here yet). Building is deterministic, so
a worker that did not build a file (another worker did, or it lost its disk) builds it again and
must get the recorded SHA-256 before it signs or delivers; a missing or different signature file
is signed again before delivery. A record delivered again after a crash resumes at the recorded
state. With `CDR_EXPORT_ENABLED=false` the agent is not started at all: closed days wait in
Kafka until exports are enabled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import faust
from prometheus_client import Counter, Histogram

from cdr_mediation.agents.export_build import CHECKPOINT_MEMBER, build_day_export, file_sha256
from cdr_mediation.agents.export_delivery import (
    Next,
    OutgoingPart,
    attempt_delivery,
    delivered_detail,
    delivery_channel,
    delivery_parts,
)
from cdr_mediation.agents.ingest import raw_topic
from cdr_mediation.agents.pg_sink import PostgresSink, SinkReadiness
from cdr_mediation.codecs.records import UndecodableRecord, decode_day_closed
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_config import ExportConfig, day_cut_off, file_name, load_export_config
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState, retry_delay
from cdr_mediation.infra.cms import SigningIdentity, sign_checkpoint, sign_detached_file
from cdr_mediation.infra.cms_verify import load_trust_anchors, verify_checkpoint, verify_detached_file
from cdr_mediation.infra.hsm import HsmConfig, HsmError, HsmSigner, SignatureProfile
from cdr_mediation.infra.postgres.export_store import (
    ConcurrentTransition,
    ExportConflict,
    current_state,
    ensure_export,
    history,
    record_transition,
)
from cdr_mediation.settings import Settings, signing_cert, signing_key_label
from cdr_mediation.topology.topics import DAY_CLOSED

log = logging.getLogger(__name__)

ACTOR = "exporter"
STEPS = Counter("cdr_export_steps_total", "Export lifecycle steps recorded", ["to_state"])
HSM_FAILURES = Counter("cdr_export_hsm_failures_total", "Signing attempts the HSM refused or could not serve")
DELIVERY_FAILURES = Counter("cdr_export_delivery_failures_total",
                            "Delivery attempts that did not leave the file with the regulator", ["channel", "kind"])
STEP_SECONDS = Histogram("cdr_export_step_seconds", "Time to build, sign or deliver one export file", ["step"])


class Exporter:
    def __init__(self, settings: Settings, readiness: SinkReadiness) -> None:
        assert settings.export_config_file and settings.hsm_ca_cert  # check_worker_startup refused otherwise
        self.config: ExportConfig = load_export_config(settings.export_config_file.read_bytes())
        self.out_dir = settings.export_dir or settings.data_dir / "exports"
        profile = SignatureProfile(settings.export_signature_profile)
        self.identity = SigningIdentity.from_pem_file(profile, signing_key_label(settings), signing_cert(settings))
        self.anchors = load_trust_anchors(settings.hsm_ca_cert.read_bytes())
        self.hsm_config = HsmConfig(settings.hsm_module, settings.hsm_token_label, settings.hsm_pin.get_secret_value(),
                                    settings.hsm_softhsm2_conf or None)
        self._signer: HsmSigner | None = None
        self.channel = delivery_channel(settings)
        self.sink = PostgresSink("export", settings.pg_dsn.get_secret_value(), readiness, contradiction=ExportConflict)

    async def handle(self, closed: DayClosed) -> None:
        operator = self.config.operator(closed.operator_id)
        name = file_name(self.config, operator, closed.day_sequence)
        await self.sink.commit(lambda conn: ensure_export(conn, closed, name))
        while True:
            state, _ = await self.sink.commit(lambda conn: current_state(conn, closed.operator_id, closed.day))
            try:
                if state is ExportState.PENDING:
                    with STEP_SECONDS.labels(step="build").time():
                        built = await self.sink.commit(lambda conn: build_day_export(conn, self.config, closed, self._dir(closed)))
                    await self._record(closed, ExportEvent.BUILT, {
                        "file_name": built.file_name, "zip_sha256": built.zip_sha256,
                        "checkpoint": built.checkpoint.to_dict()})
                elif state is ExportState.BUILT:
                    detail = await self._sign(closed, name)
                    await self._record(closed, ExportEvent.SIGNED, detail)
                elif state is ExportState.SIGNED:
                    detail = await self._deliver(closed, name)
                    if detail is None:
                        return  # refused for good: left in SIGNED (see _deliver)
                    await self._record(closed, ExportEvent.DELIVERED, detail)
                else:
                    return  # delivered or further: acknowledgement and the rest are not this agent's yet
            except ConcurrentTransition as exc:
                log.info("another exporter moved this export first; reloading", extra={"error": str(exc)})

    async def close(self) -> None:
        """Release the database connection and the HSM session (a tool that is done with them)."""
        await self.sink.close()
        if self._signer is not None:
            self._signer.close()
            self._signer = None

    async def _record(self, closed: DayClosed, event: ExportEvent, detail: dict) -> None:
        state = await self.sink.commit(
            lambda conn: record_transition(conn, closed.operator_id, closed.day, event, actor=ACTOR, detail=detail))
        STEPS.labels(to_state=state.value).inc()
        log.info("export step", extra={"operator_id": closed.operator_id, "day": closed.day,
                                       "event": event.value, "state": state.value})

    def _dir(self, closed: DayClosed) -> Path:
        path = self.out_dir / closed.operator_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _recorded(self, closed: DayClosed, event: ExportEvent) -> dict:
        """The detail of the latest `event` step of this export."""
        steps = await self.sink.commit(lambda conn: history(conn, closed.operator_id, closed.day))
        return next(step.detail for step in reversed(steps) if step.event is event)

    async def _built_zip(self, closed: DayClosed, name: str) -> Path:
        """The ZIP recorded as built, rebuilt here if this worker does not hold those bytes."""
        recorded = await self._recorded(closed, ExportEvent.BUILT)
        path = self._dir(closed) / f"{name}.zip"
        if not path.exists() or file_sha256(path) != recorded["zip_sha256"]:
            built = await self.sink.commit(lambda conn: build_day_export(conn, self.config, closed, self._dir(closed)))
            if built.zip_sha256 != recorded["zip_sha256"]:
                raise RuntimeError(f"{name}: rebuilt ZIP {built.zip_sha256} differs from the recorded "
                                   f"{recorded['zip_sha256']}: the stored CDRs changed since the build")
        return path

    async def _sign(self, closed: DayClosed, name: str) -> dict:
        return await self.sign_zip(closed, await self._built_zip(closed, name))

    async def sign_zip(self, closed: DayClosed, zip_path: Path) -> dict:
        """Sign a built ZIP and its checkpoint in the HSM, check both against the trust anchor
        and write the signature files beside the ZIP; returns the SIGNED step's detail.

        Waits (retrying with backoff) while the HSM is unavailable. Touches no database: the
        lifecycle step above and `cdrmed bench export` both run exactly this."""
        checkpoint_bytes = _checkpoint_member(zip_path)
        cut_off = day_cut_off(closed.day)
        attempt = 0
        while True:
            attempt += 1
            try:
                with STEP_SECONDS.labels(step="sign").time():
                    cms_der, checkpoint_signature = await asyncio.to_thread(self._sign_in_hsm, zip_path,
                                                                            checkpoint_bytes, cut_off)
                break
            except HsmError as exc:
                HSM_FAILURES.inc()
                self._signer = None  # a new session next time (token locked, library reloaded, ...)
                delay = retry_delay(attempt)
                log.warning("HSM unavailable; signing is retried with backoff", extra={
                    "operator_id": closed.operator_id, "day": closed.day, "error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
        # Checked against the trust anchor before anything says "signed"; the checkpoint
        # signature with the certificate the CMS verified. The ZIP is read in chunks, as the
        # signer read it: a day of ten million records makes a ZIP of ~400 MB, more than the
        # worker's whole memory budget.
        verified = await asyncio.to_thread(verify_detached_file, cms_der, zip_path, self.anchors)
        verify_checkpoint(checkpoint_bytes, checkpoint_signature.signature, checkpoint_signature.key_id,
                          verified.signer)
        name = zip_path.name.removesuffix(".zip")
        cms_path = zip_path.with_name(zip_path.name + ".p7s")
        cms_path.write_bytes(cms_der)
        zip_path.with_name(f"{name}.checkpoint.json").write_bytes(checkpoint_bytes)
        zip_path.with_name(f"{name}.checkpoint.sig").write_bytes(checkpoint_signature.signature)
        return {"profile": self.identity.profile.value, "cms_sha256": hashlib.sha256(cms_der).hexdigest(),
                "checkpoint_key_id": checkpoint_signature.key_id,
                "checkpoint_signature": checkpoint_signature.signature.hex()}

    async def _deliver(self, closed: DayClosed, name: str) -> dict | None:
        """Deliver the signature and the ZIP; the DELIVERED step's detail, or None if refused for good.

        Retryable errors (endpoint down, server error) keep the export in SIGNED and retry with
        `retry_delay` backoff, holding this agent's partition like the HSM retry does. A
        permanent error (access refused, conflict: the receiver holds other bytes under the
        name, invalid name) is logged critical and counted, and None returned: the export stays
        in SIGNED and this agent goes on with the next closed day. Nothing retries it after that
        (the closed-day record is consumed); a person must act, and a later issue moves such an
        export to MANUAL at its deadline.
        """
        zip_path = await self._built_zip(closed, name)
        zip_sha256 = (await self._recorded(closed, ExportEvent.BUILT))["zip_sha256"]
        cms_sha256 = await self._signature_at_hand(closed, name, zip_path)
        return await self.deliver_parts(closed, delivery_parts(zip_path, zip_sha256=zip_sha256, cms_sha256=cms_sha256))

    async def deliver_parts(self, closed: DayClosed, parts: Sequence[OutgoingPart]) -> dict | None:
        """Deliver a signed export's parts with `_deliver`'s retry rules; the DELIVERED step's
        detail, or None if refused for good. Touches no database (`cdrmed bench export` runs it)."""
        channel = self.channel.channel
        attempt = 0
        while True:
            attempt += 1
            with STEP_SECONDS.labels(step="deliver").time():
                outcome = await attempt_delivery(self.channel, parts)
            if outcome.delivered:
                return delivered_detail(*outcome.receipts)
            kind = outcome.verdict.kind
            DELIVERY_FAILURES.labels(channel=channel, kind=kind).inc()
            context = {"operator_id": closed.operator_id, "day": closed.day, "channel": channel,
                       "remote_name": outcome.failed.remote_name, "kind": kind, "attempt": attempt,
                       "error": outcome.reason}
            if outcome.verdict.next is Next.GIVE_UP:
                log.critical("export delivery refused; it stays in SIGNED until a person acts", extra=context)
                return None
            delay = retry_delay(attempt)
            log.warning("export delivery failed; the export waits in SIGNED and is retried",
                        extra={**context, "retry_in_s": delay})
            await asyncio.sleep(delay)

    async def _signature_at_hand(self, closed: DayClosed, name: str, zip_path: Path) -> str:
        """SHA-256 of `NAME.zip.p7s` on this worker, signed again here if it is missing or not the
        recorded one (another worker signed, or this one lost its disk)."""
        recorded = (await self._recorded(closed, ExportEvent.SIGNED))["cms_sha256"]
        cms_path = zip_path.with_name(zip_path.name + ".p7s")
        if cms_path.exists() and file_sha256(cms_path) == recorded:
            return recorded
        signed = await self._sign(closed, name)
        if signed["cms_sha256"] != recorded:
            # Ed25519 signs the same bytes again; ECDSA does not. The new CMS is as valid, and
            # the DELIVERED step records the digest of the one that went out.
            log.warning("signature made again differs from the recorded one", extra={
                "operator_id": closed.operator_id, "day": closed.day, "profile": signed["profile"],
                "recorded_cms_sha256": recorded, "cms_sha256": signed["cms_sha256"]})
        return signed["cms_sha256"]

    def _sign_in_hsm(self, zip_path: Path, checkpoint_bytes: bytes, cut_off):
        if self._signer is None:
            self._signer = HsmSigner(self.hsm_config)
        cms_der = sign_detached_file(zip_path, identity=self.identity, signer=self._signer, signing_time=cut_off)
        return cms_der, sign_checkpoint(checkpoint_bytes, identity=self.identity, signer=self._signer)


def _checkpoint_member(zip_path: Path) -> bytes:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(CHECKPOINT_MEMBER)


def register(app: faust.App, settings: Settings, readiness: SinkReadiness) -> None:
    exporter = Exporter(settings, readiness)

    @app.agent(raw_topic(app, DAY_CLOSED.named(settings.topic_prefix).name), name="exporter")
    async def export(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                closed = decode_day_closed(event.value)
            except UndecodableRecord as exc:
                # Only the rollup step writes this topic: an undecodable record is a bug upstream.
                log.error("undecodable day-closed record skipped", extra={"error": str(exc),
                                                                         "offset": event.message.offset})
                continue
            await exporter.handle(closed)
