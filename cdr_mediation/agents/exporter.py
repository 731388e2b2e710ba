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
  critical, counted, and recorded as `delivery_refused`: the export goes to MANUAL at once.

A failure that may pass (HSM locked, endpoint down) is retried in place with `retry_delay`
backoff (`CDR_EXPORT_RETRY_BASE_S`), re-reading the state before each try, so the loop stops
when the follow-up (`agents/export_followup.py`: answers, time-outs, the deadline) has taken the
export to MANUAL. Building is deterministic, so a worker that did not build a file (another
worker did, or it lost its disk) builds it again and must get the recorded SHA-256 before it
signs or delivers; other bytes halt the export (`ExportHalted`, metric
`cdr_export_halted_total`): the stored CDRs or the configuration changed, and only a person can
say which file is right. A signature recorded for these ZIP bytes and still at hand is reused;
a missing one is made again. A record delivered again after a crash resumes at the recorded
state. With `CDR_EXPORT_ENABLED=false` the agent is not started at all: closed days wait in
Kafka until exports are enabled.

With `CDR_CHAIN_VERIFY_FAIL_FAST`, an operator whose latest recorded verification found a chain
break or a checkpoint mismatch (`agents/verifier.unresolved_break`) gets nothing built, signed or
delivered: the export halts (`ExportHalted("chain_break")`) and waits. When a later verification
finds the operator intact, the follow-up drives the exports this worker halted on
(`drive_lifted`); one halted before a restart waits for its deadline (MANUAL), like any halt.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import faust
from prometheus_client import Counter, Histogram

from cdr_mediation.agents.export_build import CHECKPOINT_MEMBER, build_day_export, file_sha256
from cdr_mediation.agents.export_part import SplitBuild
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
from cdr_mediation.agents.verifier import unresolved_break
from cdr_mediation.codecs.records import UndecodableRecord, decode_day_closed
from cdr_mediation.domain.day_close import DayClosed
from cdr_mediation.domain.export_archive import delivered_keys
from cdr_mediation.domain.export_config import ExportConfig, day_cut_off, file_name, load_export_config
from cdr_mediation.domain.export_lifecycle import ExportEvent, ExportState, retry_delay
from cdr_mediation.infra.cms import SigningIdentity, sign_checkpoint, sign_detached_file
from cdr_mediation.infra.cms_verify import load_trust_anchors, verify_checkpoint, verify_detached_file
from cdr_mediation.infra.hsm import HsmConfig, HsmError, HsmSigner, SignatureProfile
from cdr_mediation.infra.postgres.audit_store import new_request_id
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
FOLLOW_UP_FAILURES = Counter("cdr_export_followup_failures_total", "Follow-up polls that failed")
HALTED = Counter("cdr_export_halted_total", "Exports stopped until a person acts", ["reason"])
CHAIN_BREAK = "chain_break"  # the ExportHalted reason of CDR_CHAIN_VERIFY_FAIL_FAST
# States whose next step builds or signs (delivering, from SIGNED, is checked in `deliver_once`).
_BUILDS_OR_SIGNS = frozenset({ExportState.PENDING, ExportState.BUILT, ExportState.REBUILT})
STEP_SECONDS = Histogram("cdr_export_step_seconds", "Time to build, sign or deliver one export file", ["step"])


class ExportHalted(RuntimeError):
    """The export cannot go on without a person: logged critical and counted; the deadline then
    takes it to MANUAL. Never retried by itself, because retrying cannot change the cause."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
        self.retry_base_s = settings.export_retry_base_s
        self.fail_fast = settings.chain_verify_fail_fast
        # Exports this worker halted for a chain break: driven on once their operator is found intact.
        self._halted_for_chain_break: dict[tuple[str, str], DayClosed] = {}
        self.channel = delivery_channel(settings)
        self.sink = PostgresSink("export", settings.pg_dsn.get_secret_value(), readiness, contradiction=ExportConflict)
        self.split = SplitBuild(settings.pg_dsn.get_secret_value(), settings.export_split_min_records)
        from cdr_mediation.agents.export_archive import ExportArchiver
        from cdr_mediation.infra.archive import archive_store

        self.archiver = ExportArchiver(archive_store(settings), self, settings.archive_retention_days)

    async def handle(self, closed: DayClosed) -> None:
        operator = self.config.operator(closed.operator_id)
        name = file_name(self.config, operator, closed.day_sequence)
        await self.sink.commit(lambda conn: ensure_export(conn, closed, name))
        await self.drive(closed)

    async def drive(self, closed: DayClosed) -> None:
        """Move the export as far as this system can take it: to DELIVERED, or to MANUAL when
        the delivery is refused for good. A failure that may pass (HSM locked, endpoint down)
        is retried here with backoff, re-reading the state before each try: the follow-up
        takes the export to MANUAL at its deadline, and then this loop stops."""
        name = file_name(self.config, self.config.operator(closed.operator_id), closed.day_sequence)
        failures = 0
        while True:
            state, _ = await self.sink.commit(lambda conn: current_state(conn, closed.operator_id, closed.day))
            try:
                if state in _BUILDS_OR_SIGNS:
                    await self.refuse_if_chain_broken(closed.operator_id)
                if state is ExportState.PENDING:
                    with STEP_SECONDS.labels(step="build").time():
                        built = await self.sink.commit(lambda conn: build_day_export(conn, self.config, closed, self._dir(closed), split=self.split))
                    await self._checked_against_earlier_builds(closed, built.zip_sha256)
                    await self._record(closed, ExportEvent.BUILT, {
                        "file_name": built.file_name, "zip_sha256": built.zip_sha256,
                        "checkpoint": built.checkpoint.to_dict()})
                elif state in (ExportState.BUILT, ExportState.REBUILT):
                    detail = await self._sign(closed, name)
                    if detail is None:
                        failures += 1
                        await asyncio.sleep(retry_delay(failures, base_s=self.retry_base_s))
                        continue
                    await self._record(closed, ExportEvent.SIGNED, detail)
                elif state is ExportState.SIGNED:
                    outcome = await self.deliver_once(closed, name)
                    if outcome.delivered:
                        detail = delivered_detail(*outcome.receipts)
                        keys = delivered_keys(closed.operator_id, closed.day, detail["sha256"], name)
                        await self._record(closed, ExportEvent.DELIVERED, {**detail, "archive_keys": list(keys.values())})
                        await self.archiver.archive_keys(closed.operator_id, closed.day, list(keys.values()))
                    elif outcome.verdict.next is Next.GIVE_UP:
                        await self._record(closed, ExportEvent.DELIVERY_REFUSED, {
                            "kind": outcome.verdict.kind, "remote_name": outcome.failed.remote_name,
                            "reason": outcome.reason, "channel": self.channel.channel})
                    else:
                        failures += 1
                        await asyncio.sleep(retry_delay(failures, base_s=self.retry_base_s))
                else:
                    return  # delivered or further: the follow-up (agents/export_followup.py) takes over
            except ConcurrentTransition as exc:
                log.info("another exporter moved this export first; reloading", extra={"error": str(exc)})
            except ExportHalted as exc:
                HALTED.labels(reason=exc.reason).inc()
                log.critical("export halted; a person must act (it goes to MANUAL at its deadline)", extra={
                    "operator_id": closed.operator_id, "day": closed.day, "reason": exc.reason, "error": str(exc)})
                if exc.reason == CHAIN_BREAK:
                    self._halted_for_chain_break[closed.key] = closed
                return

    async def refuse_if_chain_broken(self, operator_id: str) -> None:
        """Under CDR_CHAIN_VERIFY_FAIL_FAST: `ExportHalted("chain_break")` while the latest recorded
        verification covering the operator found it broken (docs/verification.md §4)."""
        if not self.fail_fast:
            return
        broken = await self.sink.commit(lambda conn: unresolved_break(conn, operator_id))
        if broken is not None:
            raise ExportHalted(CHAIN_BREAK, f"the verification recorded at audit_seq {broken.audit_seq} ({broken.at}) "
                                            f"found the chain or an export checkpoint of {operator_id} broken; its "
                                            "exports wait until a verification finds it intact")

    async def drive_lifted(self) -> None:
        """Drive on the exports this worker halted for a chain break whose operator a later
        verification found intact (the follow-up calls this every poll)."""
        for key, closed in list(self._halted_for_chain_break.items()):
            if self.fail_fast and await self.sink.commit(lambda conn: unresolved_break(conn, closed.operator_id)):
                continue
            del self._halted_for_chain_break[key]
            log.info("chain verified intact again; the halted export goes on", extra={
                "operator_id": closed.operator_id, "day": closed.day})
            await self.drive(closed)

    async def close(self) -> None:
        """Release the database connection and the HSM session (a tool that is done with them)."""
        await self.sink.close()
        if self._signer is not None:
            self._signer.close()
            self._signer = None

    async def _record(self, closed: DayClosed, event: ExportEvent, detail: dict) -> None:
        await record_step(self.sink, closed.operator_id, closed.day, event, detail, actor=ACTOR)

    def _dir(self, closed: DayClosed) -> Path:
        path = self.out_dir / closed.operator_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _recorded(self, closed: DayClosed, *events: ExportEvent) -> dict | None:
        """The detail of the latest step that is one of `events`, or None."""
        steps = await self.sink.commit(lambda conn: history(conn, closed.operator_id, closed.day))
        return next((step.detail for step in reversed(steps) if step.event in events), None)

    async def _checked_against_earlier_builds(self, closed: DayClosed, zip_sha256: str) -> None:
        """A build after a resume must give the bytes built before: a file name stands for one
        file (a corrected file is a rebuild after a rejection, `cdrmed export reissue`)."""
        earlier = await self._recorded(closed, ExportEvent.BUILT, ExportEvent.REBUILT)
        if earlier is not None and earlier["zip_sha256"] != zip_sha256:
            raise ExportHalted("rebuild_differs", f"built ZIP {zip_sha256} differs from the recorded "
                                                  f"{earlier['zip_sha256']}: the stored CDRs or the configuration changed")

    async def _built_zip(self, closed: DayClosed, name: str) -> tuple[Path, str]:
        """The ZIP recorded as built (or rebuilt) and its SHA-256, built again here if this worker
        does not hold those bytes."""
        recorded = (await self._recorded(closed, ExportEvent.BUILT, ExportEvent.REBUILT))["zip_sha256"]
        path = self._dir(closed) / f"{name}.zip"
        if not path.exists() or file_sha256(path) != recorded:
            built = await self.sink.commit(lambda conn: build_day_export(conn, self.config, closed, self._dir(closed), split=self.split))
            if built.zip_sha256 != recorded:
                raise ExportHalted("rebuild_differs", f"{name}: rebuilt ZIP {built.zip_sha256} differs from the "
                                                      f"recorded {recorded}: the stored CDRs or the configuration changed")
        return path, recorded

    async def _sign(self, closed: DayClosed, name: str) -> dict | None:
        """The SIGNED step's detail, or None while the HSM cannot sign (counted, logged).

        A signature already recorded for these ZIP bytes and still at hand is reused rather than
        made again: with ECDSA a new signature would be other bytes than the ones the regulator
        may already hold."""
        zip_path, zip_sha256 = await self._built_zip(closed, name)
        cms_path = zip_path.with_name(zip_path.name + ".p7s")
        earlier = await self._recorded(closed, ExportEvent.SIGNED)
        if (earlier is not None and earlier.get("zip_sha256") == zip_sha256 and cms_path.exists()
                and file_sha256(cms_path) == earlier["cms_sha256"]):
            return dict(earlier)
        return await self.sign_zip(closed, zip_path, zip_sha256)

    async def sign_zip(self, closed: DayClosed, zip_path: Path, zip_sha256: str) -> dict | None:
        """Sign a built ZIP and its checkpoint in the HSM, check both against the trust anchor
        and write the signature files beside the ZIP; the SIGNED step's detail, or None while
        the HSM cannot sign. Touches no database: the lifecycle step above and
        `cdrmed bench export` both run exactly this."""
        checkpoint_bytes = _checkpoint_member(zip_path)
        try:
            with STEP_SECONDS.labels(step="sign").time():
                cms_der, checkpoint_signature = await asyncio.to_thread(self._sign_in_hsm, zip_path, checkpoint_bytes,
                                                                        day_cut_off(closed.day))
        except HsmError as exc:
            HSM_FAILURES.inc()
            self._signer = None  # a new session next time (token locked, library reloaded, ...)
            log.warning("HSM unavailable; the export waits in BUILT and signing is retried", extra={
                "operator_id": closed.operator_id, "day": closed.day, "error": str(exc)})
            return None
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
        # The CMS itself is kept in the step (a few KB): the archive and an auditor can have the
        # exact signature that was delivered even after this worker's disk is gone (an ECDSA
        # signature cannot be made again byte for byte).
        return {"profile": self.identity.profile.value, "zip_sha256": zip_sha256,
                "cms_sha256": hashlib.sha256(cms_der).hexdigest(), "cms_base64": base64.b64encode(cms_der).decode(),
                "checkpoint_key_id": checkpoint_signature.key_id,
                "checkpoint_signature": checkpoint_signature.signature.hex()}

    async def deliver_once(self, closed: DayClosed, name: str):
        """One pass of delivering the signature and the ZIP (`attempt_delivery`); a failure is
        counted and logged here, the caller decides (retry, or MANUAL when it is permanent).
        `ExportHalted` under fail-fast while the operator's chain is found broken."""
        await self.refuse_if_chain_broken(closed.operator_id)
        zip_path, zip_sha256 = await self._built_zip(closed, name)
        cms_sha256 = await self._signature_at_hand(closed, name, zip_path)
        return await self.deliver_parts(closed, delivery_parts(zip_path, zip_sha256=zip_sha256, cms_sha256=cms_sha256))

    async def deliver_parts(self, closed: DayClosed, parts: Sequence[OutgoingPart]):
        """One delivery attempt of a signed export's parts; a failure is counted and logged.
        Touches no database (`cdrmed bench export` runs it)."""
        with STEP_SECONDS.labels(step="deliver").time():
            outcome = await attempt_delivery(self.channel, parts)
        if not outcome.delivered:
            channel, kind = self.channel.channel, outcome.verdict.kind
            DELIVERY_FAILURES.labels(channel=channel, kind=kind).inc()
            context = {"operator_id": closed.operator_id, "day": closed.day, "channel": channel,
                       "remote_name": outcome.failed.remote_name, "kind": kind, "error": outcome.reason}
            if outcome.verdict.next is Next.GIVE_UP:
                log.critical("export delivery refused; the export goes to MANUAL", extra=context)
            else:
                log.warning("export delivery failed; it is retried", extra=context)
        return outcome

    async def _signature_at_hand(self, closed: DayClosed, name: str, zip_path: Path) -> str:
        """SHA-256 of `NAME.zip.p7s` on this worker, signed again here if it is missing or not the
        recorded one (another worker signed, or this one lost its disk)."""
        recorded = (await self._recorded(closed, ExportEvent.SIGNED))["cms_sha256"]
        cms_path = zip_path.with_name(zip_path.name + ".p7s")
        if cms_path.exists() and file_sha256(cms_path) == recorded:
            return recorded
        signed = await self._sign(closed, name)
        if signed is None:
            raise ExportHalted("hsm_unavailable", f"{name}: the signature is not at hand and the HSM cannot sign")
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


async def record_step(sink: PostgresSink, operator_id: str, day: str, event: ExportEvent, detail: dict, *,
                      actor: str) -> ExportState:
    """Record one lifecycle step (with its evidence and its audit row), count it and log it; the
    log line carries the audit row's request id."""
    request_id = new_request_id()
    state = await sink.commit(
        lambda conn: record_transition(conn, operator_id, day, event, actor=actor, detail=detail,
                                       request_id=request_id))
    STEPS.labels(to_state=state.value).inc()
    log.log(logging.WARNING if state is ExportState.MANUAL else logging.INFO, "export step",
            extra={"operator_id": operator_id, "day": day, "event": event.value, "state": state.value, "actor": actor,
                   "request_id": request_id})
    return state


def _checkpoint_member(zip_path: Path) -> bytes:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(CHECKPOINT_MEMBER)


def register(app: faust.App, settings: Settings, readiness: SinkReadiness) -> None:
    from cdr_mediation.agents.export_followup import ExportFollowUp, timers

    exporter = Exporter(settings, readiness)
    follow_up = ExportFollowUp(exporter, timers(settings))

    # Every exporter polls, not only the group's leader: the leader may be a worker without the
    # exporter agent (one consumer group for all agents). Two pollers taking the same step is
    # harmless: the second loses the race on the step's primary key.
    @app.timer(settings.export_poll_interval_s, name="export_followup")
    async def follow_up_exports() -> None:
        try:
            await follow_up.poll_once()
        except Exception:  # noqa: BLE001 - a failed poll must not stop the timer; the next one retries
            FOLLOW_UP_FAILURES.inc()
            log.exception("export follow-up poll failed; retried at the next interval")

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
