"""`cdrmed`: the one command of the project (stack, workers, portal, tools, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
from pathlib import Path

from cdr_mediation.stack.layout import DEFAULT_STATE_DIR


def _stack(args: argparse.Namespace):
    from cdr_mediation.stack import Stack

    return Stack(Path(args.state_dir))


def cmd_stack_up(args: argparse.Namespace) -> int:
    from cdr_mediation.stack import StackError

    try:
        status = _stack(args).up()
    except StackError as exc:
        print(f"cdrmed stack up: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({name: health.as_json() for name, health in status.items()}, indent=2))
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    if args.json:
        print(json.dumps({name: health.as_json() for name, health in status.items()}))
    else:
        for name, health in status.items():
            state = "healthy" if health.healthy else f"DOWN ({health.detail})"
            print(f"{name:<9} {state:<10} {health.endpoint}")
    return 0 if all(h.healthy for h in status.values()) else 1


def cmd_stack_down(args: argparse.Namespace) -> int:
    _stack(args).down()
    return 0


def cmd_stack_env(args: argparse.Namespace) -> int:
    import shlex

    for key, value in sorted(_stack(args).settings_env().items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.worker import prepare_topics
    from cdr_mediation.runtime import start_process
    from cdr_mediation.tables.ingest import INGEST_TABLE
    from cdr_mediation.tables.rollup import ROLLUP_TABLE
    from cdr_mediation.topology.topics import all_topics

    process = start_process("topics", worker=False, metrics=False)
    settings = process.settings
    prepare_topics(settings, all_topics(settings.app_id, (INGEST_TABLE, ROLLUP_TABLE), prefix=settings.topic_prefix))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.worker import build_worker_app, prepare_topics, run_worker
    from cdr_mediation.runtime import start_process
    from cdr_mediation.topology.topics import all_topics

    process = start_process("worker", worker=True)
    settings = process.settings
    app, tables = build_worker_app(settings)
    prepare_topics(settings, all_topics(settings.app_id, tables, prefix=settings.topic_prefix))
    run_worker(app, process.settings)
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.bridge import Bridge
    from cdr_mediation.agents.worker import prepare_topics
    from cdr_mediation.runtime import start_process
    from cdr_mediation.topology.topics import DLR, DLR_DEAD_LETTER

    process = start_process("bridge", worker=False)
    settings = process.settings
    prepare_topics(settings, tuple(spec.named(settings.topic_prefix) for spec in (DLR, DLR_DEAD_LETTER)))

    async def bridge() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Bridge(settings).run(stop)

    asyncio.run(bridge())
    return 0


def cmd_portal(args: argparse.Namespace) -> int:
    from cdr_mediation.infra.hsm import HsmConfig, HsmSigner
    from cdr_mediation.infra.readiness import hsm_probe, kafka_probe, postgres_probe
    from cdr_mediation.portal.app import create_portal, create_probe_app
    from cdr_mediation.portal import verify
    from cdr_mediation.portal.tls import mutual_tls_context
    from cdr_mediation.runtime import start_process

    process = start_process("portal", worker=False)
    settings = process.settings
    hsm = HsmConfig(settings.hsm_module, settings.hsm_token_label, settings.hsm_pin.get_secret_value(),
                    settings.hsm_softhsm2_conf or None)
    probes = {
        "kafka": kafka_probe(settings.kafka_bootstrap),
        "postgres": postgres_probe(settings.pg_dsn.get_secret_value()),
        "hsm": hsm_probe(lambda: HsmSigner(hsm)),
    }
    missing = [name for name, value in (("CDR_PORTAL_TLS_CERT", settings.portal_tls_cert),
                                        ("CDR_PORTAL_TLS_KEY", settings.portal_tls_key),
                                        ("CDR_PORTAL_CLIENT_CA", settings.portal_client_ca),
                                        ("CDR_PORTAL_CLIENT_CRL", settings.portal_client_crl)) if value is None]
    if missing:
        print(f"cdrmed portal: the API is served over mutual TLS only; set {', '.join(missing)}", file=sys.stderr)
        return 2
    tls = mutual_tls_context(server_cert=settings.portal_tls_cert, server_key=settings.portal_tls_key,
                             client_ca=settings.portal_client_ca, client_crl=settings.portal_client_crl)
    from cdr_mediation.infra.archive import archive_store
    from cdr_mediation.portal.access_log import PortalAccessLog
    from cdr_mediation.portal.adjustments import AdjustmentSettings
    from cdr_mediation.topology.topics import ADJUSTMENT

    adjustments = AdjustmentSettings(settings.adjustment_enabled, ADJUSTMENT.named(settings.topic_prefix).name)
    api = create_portal(probes, pg_dsn=settings.pg_dsn.get_secret_value(), worker_urls=settings.worker_urls,
                        archive=archive_store(settings), adjustments=adjustments, msisdn_hasher=process.hasher)
    verify.use_trust_anchors(api, settings.hsm_ca_cert)  # POST /v1/cdr/chain/verify checks checkpoint signatures
    asyncio.run(_serve_portal(api, create_probe_app(probes), settings, tls,
                              access_log_class=PortalAccessLog.with_hasher(process.hasher)))
    return 0


async def _serve_portal(api, probe_app, settings, tls, *, access_log_class=None) -> None:
    """The API (mutual TLS) and the probe listener (clear) until SIGTERM / SIGINT."""
    import logging

    from aiohttp import web

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # The API's access log redacts the MSISDN filter (portal/access_log.py); the probes log nothing
    # (the kubelet would fill the log).
    api_runner = (web.AppRunner(api, access_log=None) if access_log_class is None else
                  web.AppRunner(api, access_log_class=access_log_class,
                                access_log=logging.getLogger("cdr_mediation.portal.access")))
    runners = [api_runner, web.AppRunner(probe_app, access_log=None)]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], settings.portal_host, settings.portal_port, ssl_context=tls).start()
    await web.TCPSite(runners[1], settings.portal_host, settings.portal_probe_port).start()
    try:
        await stopping.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def cmd_generate(args: argparse.Namespace) -> int:
    from cdr_mediation.infra.nats import DlrInbox
    from cdr_mediation.runtime import start_process
    from cdr_mediation.stack.dlr_source import publish_dlrs

    process = start_process("generate", worker=False)
    start = dt.datetime.fromisoformat(args.start) if args.start else dt.datetime.now(dt.timezone.utc)

    async def publish() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        settings = process.settings
        return await publish_dlrs(settings.nats_url, inbox=DlrInbox(settings.nats_stream, settings.nats_subject_root),
                                  seed=args.seed, start=start,
                                  count=args.count, rate_per_s=args.rate, stop=stop)

    print(json.dumps({"published": asyncio.run(publish())}))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute the chains and the export checkpoints (docs/verification.md); one JSON line per
    operator and per export file, the run recorded as a `chain.verify` audit row. Exit 1 on any
    break or mismatch, 2 without a trust anchor, 75 (EX_TEMPFAIL) while another run holds the lock."""
    import logging

    import asyncpg

    from cdr_mediation.agents.verifier import VerificationBusy, run_verification, verification_report
    from cdr_mediation.infra.cms_verify import load_trust_anchors
    from cdr_mediation.infra.postgres.audit_store import new_request_id
    from cdr_mediation.runtime import start_process

    process = start_process("verify", worker=False, metrics=False)
    settings = process.settings
    if settings.hsm_ca_cert is None:
        print("cdrmed verify: set CDR_HSM_CA_CERT, the trust anchor of the export checkpoints' signatures",
              file=sys.stderr)
        return 2
    anchors = load_trust_anchors(settings.hsm_ca_cert.read_bytes())
    request_id = new_request_id()

    async def verify():
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            return await run_verification(conn, anchors, request_id=request_id, operator_ids=args.operator or None)
        finally:
            await conn.close()

    try:
        run = asyncio.run(verify())
    except VerificationBusy:
        print("cdrmed verify: another verification is running (the daily job?); try again when it has finished",
              file=sys.stderr)
        return 75
    logging.getLogger("cdr_mediation.verify").info("verification run done", extra={"request_id": request_id})
    for result in run.chains:
        print(json.dumps(verification_report(result)))
    for verdict in run.checkpoints:
        print(json.dumps({"checkpoint": verdict.to_dict()}))
    return 0 if run.ok else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute the audit log; the run is recorded as an `audit.verify` entry after it."""
    from cdr_mediation.domain.audit import AUDIT_VERIFY, SYSTEM_ROLE, AuditHead
    from cdr_mediation.infra.postgres.audit_store import append_audit, new_request_id, verify_stored_audit

    expected = None
    if args.expect_head:
        seq, _, digest = args.expect_head.partition(":")
        expected = AuditHead(int(seq), digest)

    async def verify(conn, _settings):
        result = await verify_stored_audit(conn, expected_head=expected)
        report = result.to_dict()
        async with conn.transaction():
            await append_audit(conn, actor="audit-verifier", actor_role=SYSTEM_ROLE, action=AUDIT_VERIFY,
                               request_id=new_request_id(), refs={}, detail=report)
        return result, report

    result, report = _with_database("audit-verify", verify)
    print(json.dumps(report))
    return 0 if result.ok else 1


def cmd_audit_list(args: argparse.Namespace) -> int:
    from cdr_mediation.infra.postgres.audit_store import read_audit

    refs = {key: value for key, value in (("operator_id", args.operator), ("day", args.day)) if value is not None}

    async def page(conn, _settings):
        return await read_audit(conn, action=args.audit_action, actor=args.actor, refs=refs or None, since=args.since,
                                until=args.until, after_seq=args.after, limit=args.limit)

    entries, cursor = _with_database("audit-list", page)
    for entry in entries:
        print(json.dumps(entry.to_row()))
    if cursor is not None:
        print(json.dumps({"next_after": cursor}))
    return 0


def cmd_outbox_relay(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from cdr_mediation.agents.outbox_relay import NotLeading, OutboxRelay
    from cdr_mediation.runtime import start_process

    process = start_process("outbox-relay", worker=False, metrics=not args.once)
    relay = OutboxRelay(process.settings)
    if args.once:
        try:
            published = asyncio.run(relay.drain())
        except NotLeading as exc:
            print(f"cdrmed outbox relay --once: {exc}; it publishes the outbox", file=sys.stderr)
            return 1
        except KafkaError as exc:
            # What Kafka acknowledged is marked; the rest stays pending for the next run, in order.
            print(f"cdrmed outbox relay --once: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"published": published}))
        return 0

    async def relay_until_stopped() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await relay.run(stop)

    asyncio.run(relay_until_stopped())
    return 0


def cmd_clock_tick(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.clock import publish_ticks, tick_time
    from cdr_mediation.domain.rollup import ClockTick
    from cdr_mediation.runtime import start_process
    from cdr_mediation.topology.topics import CDR

    process = start_process("clock", worker=False, metrics=False)
    settings = process.settings
    try:
        at = tick_time(args.at, args.lag_s, dt.datetime.now(dt.timezone.utc), allow_future=args.allow_future)
    except ValueError as exc:
        print(f"cdrmed clock tick: {exc}", file=sys.stderr)
        return 2
    ticks = [ClockTick(operator_id, at) for operator_id in args.operator]
    asyncio.run(publish_ticks(settings.kafka_bootstrap, CDR.named(settings.topic_prefix).name, ticks))
    print(json.dumps({"ticks": [tick.to_dict() for tick in ticks]}))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import asyncpg

    from cdr_mediation.agents.reconcile import reconcile_day
    from cdr_mediation.runtime import start_process

    process = start_process("reconcile", worker=False, metrics=False)

    async def reconcile():
        conn = await asyncpg.connect(process.settings.pg_dsn.get_secret_value())
        try:
            return await reconcile_day(conn, args.day, args.operator)
        finally:
            await conn.close()

    report = asyncio.run(reconcile())
    for difference in report.differences:
        print(json.dumps(difference.to_dict()))
    print(json.dumps(report.summary()))
    return 0 if report.ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncpg

    from cdr_mediation.agents.replay import replay_chain_heads
    from cdr_mediation.domain.pricing import load_snapshot
    from cdr_mediation.infra.postgres.cdr_store import stored_heads
    from cdr_mediation.runtime import start_process
    from cdr_mediation.topology.topics import DLR

    process = start_process("replay", worker=False, metrics=False)
    settings = process.settings
    if settings.pricing_file is None:
        print("cdrmed replay: set CDR_PRICING_FILE to the pricing snapshot the system runs with", file=sys.stderr)
        return 2
    pricing = load_snapshot(settings.pricing_file.read_bytes())
    work_dir = Path(args.work_dir or settings.data_dir / "replay")

    async def replay() -> tuple[dict, dict]:
        heads = await replay_chain_heads(settings.kafka_bootstrap, DLR.named(settings.topic_prefix).name,
                                         pricing, work_dir)
        stored: dict = {}
        if args.compare:
            conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
            try:
                stored = await stored_heads(conn, sorted(heads))
            finally:
                await conn.close()
        return heads, stored

    heads, stored = asyncio.run(replay())
    differ = False
    for operator_id, head in heads.items():
        line = {"operator_id": operator_id, "chain_seq": head.chain_seq, "head_hash": head.head_hash}
        if args.compare:
            stored_seq, stored_hash = stored.get(operator_id, (0, None))
            line["stored"] = {"chain_seq": stored_seq, "head_hash": stored_hash}
            line["equal"] = (stored_seq, stored_hash) == (head.chain_seq, head.head_hash)
            differ |= not line["equal"]
        print(json.dumps(line))
    return 1 if differ else 0


def _with_database(name: str, act):
    """Run `act(conn, settings)` against the configured PostgreSQL in a process of its own."""
    import asyncpg

    from cdr_mediation.runtime import start_process

    process = start_process(name, worker=False, metrics=False)

    async def run():
        conn = await asyncpg.connect(process.settings.pg_dsn.get_secret_value())
        try:
            return await act(conn, process.settings)
        finally:
            await conn.close()

    return asyncio.run(run())


def cmd_export_status(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.export_commands import export_status

    for line in _with_database("export-status", lambda conn, _: export_status(conn, args.operator)):
        print(json.dumps(line))
    return 0


def cmd_export_resume(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.export_commands import PersonsAct, resume_export

    act = PersonsAct(args.actor, args.ticket)
    state = _with_database("export-resume", lambda conn, _: resume_export(conn, args.operator, args.day, act))
    print(json.dumps({"operator_id": args.operator, "day": args.day, "state": state.value}))
    return 0


def cmd_export_reissue(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.export_commands import PersonsAct, reissue_export
    from cdr_mediation.domain.export_config import load_export_config

    act = PersonsAct(args.actor, args.ticket)

    async def reissue(conn, settings):
        if settings.export_config_file is None:
            raise SystemExit("cdrmed export reissue: CDR_EXPORT_CONFIG_FILE is not set")
        config = load_export_config(settings.export_config_file.read_bytes())
        out_dir = settings.export_dir or settings.data_dir / "exports"
        return await reissue_export(conn, config, out_dir, args.operator, args.day, act)

    detail = _with_database("export-reissue", reissue)
    print(json.dumps({"operator_id": args.operator, "day": args.day, "state": "REBUILT",
                      **{k: detail[k] for k in ("file_name", "zip_sha256", "previous_zip_sha256", "same_bytes")}}))
    return 0


def cmd_export_rebuild(args: argparse.Namespace) -> int:
    from cdr_mediation.agents.export_rebuild import rebuild_and_compare
    from cdr_mediation.agents.exporter import Exporter
    from cdr_mediation.agents.pg_sink import SinkReadiness
    from cdr_mediation.runtime import start_process

    process = start_process("export-rebuild", worker=False, metrics=False)
    exporter = Exporter(process.settings, SinkReadiness())
    report = asyncio.run(rebuild_and_compare(exporter, args.operator, args.day))
    for entry in report:
        print(json.dumps(entry))
    return 0 if report[-1]["ok"] else 1
def _archive_work_dir(settings) -> Path:
    """Scratch space for segment files (removed after use; sized for one segment)."""
    path = Path(settings.data_dir) / "cold-tier"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cmd_archive_cold(args: argparse.Namespace) -> int:
    import asyncpg

    from cdr_mediation.agents.cold_tier import ColdTierPolicy, run_cold_pass
    from cdr_mediation.infra.archive import archive_store
    from cdr_mediation.runtime import start_process

    process = start_process("archive-cold", worker=False)
    settings = process.settings

    async def cold_pass():
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            return await run_cold_pass(conn, archive_store(settings), ColdTierPolicy.from_settings(settings),
                                       now=dt.datetime.now(dt.timezone.utc), work_dir=_archive_work_dir(settings),
                                       operator_ids=args.operator or None, dry_run=args.dry_run)
        finally:
            await conn.close()

    try:
        report = asyncio.run(cold_pass())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # A segment's release and its record are one transaction: either both happened (the next
        # pass continues after it) or neither did.
        print(f"cdrmed archive cold: PostgreSQL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for planned in report.planned if args.dry_run else []:
        print(json.dumps({"eligible": planned.to_dict()}))
    for archived in report.archived:
        print(json.dumps({"archived": archived}))
    for failure in report.failures:
        print(json.dumps({"failed": failure}))
        print(f"cdrmed archive cold: {failure['operator_id']} {failure['first_seq']}..{failure['last_seq']} not "
              f"archived ({failure['kind']}): {failure['error']}; nothing of it was deleted", file=sys.stderr)
    print(json.dumps(report.summary()))
    return 0 if report.ok else 1


def cmd_archive_restore(args: argparse.Namespace) -> int:
    import tempfile

    import asyncpg

    from cdr_mediation.agents.cold_restore import RestoreRefused, restore_to_file, restore_to_table
    from cdr_mediation.infra.archive import ArchiveError, archive_store
    from cdr_mediation.runtime import start_process

    process = start_process("archive-restore", worker=False, metrics=False)
    settings = process.settings

    async def restore() -> dict:
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            with tempfile.TemporaryDirectory(dir=_archive_work_dir(settings), prefix="restore-") as scratch:
                archive, work = archive_store(settings), Path(scratch)
                if args.out:
                    count = await restore_to_file(conn, archive, args.operator, args.from_seq, args.to_seq,
                                                  Path(args.out), work)
                    return {"restored": count, "out": str(args.out)}
                count, new = await restore_to_table(conn, archive, args.operator, args.from_seq, args.to_seq, work)
                return {"restored": count, "new_rows": new, "table": args.into_table}
        finally:
            await conn.close()

    try:
        result = asyncio.run(restore())
    except RestoreRefused as exc:
        line = {"operator_id": args.operator, "ok": False, "error": str(exc)}
        if exc.first_bad_seq is not None:
            line["first_bad_seq"] = exc.first_bad_seq
        print(json.dumps(line))
        print(f"cdrmed archive restore: {exc}", file=sys.stderr)
        return 1
    except ArchiveError as exc:
        print(f"cdrmed archive restore: archive: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"operator_id": args.operator, "from_seq": args.from_seq, "to_seq": args.to_seq, "ok": True,
                      **result}))
    return 0


def cmd_archive_verify(args: argparse.Namespace) -> int:
    import tempfile

    import asyncpg

    from cdr_mediation.agents.cold_restore import verify_operator_archive
    from cdr_mediation.infra.archive import ArchiveError, archive_store
    from cdr_mediation.infra.postgres.cold_segment_store import cold_operators
    from cdr_mediation.runtime import start_process

    process = start_process("archive-verify", worker=False, metrics=False)
    settings = process.settings

    async def verify() -> list[dict]:
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            summaries = []
            with tempfile.TemporaryDirectory(dir=_archive_work_dir(settings), prefix="verify-") as scratch:
                archive = archive_store(settings)
                for operator_id in args.operator or await cold_operators(conn):
                    segments, summary = await verify_operator_archive(conn, archive, operator_id, Path(scratch))
                    for segment in segments:
                        print(json.dumps(segment.to_dict()))
                    summaries.append(summary)
            return summaries
        finally:
            await conn.close()

    try:
        summaries = asyncio.run(verify())
    except ArchiveError as exc:
        print(f"cdrmed archive verify: archive: {exc}", file=sys.stderr)
        return 1
    for summary in summaries:
        print(json.dumps(summary))
        if not summary["ok"]:
            print(f"cdrmed archive verify: {summary['operator_id']}: {summary['problem']}", file=sys.stderr)
    return 0 if all(s["ok"] for s in summaries) else 1


def cmd_dev(args: argparse.Namespace) -> int:
    from cdr_mediation.stack.devjob import run_dev_job

    return run_dev_job(Path(args.state_dir), seconds=args.seconds, rate=args.rate)


def cmd_bench_codec(args: argparse.Namespace) -> int:
    from cdr_mediation.codecs.bench import run_codec_bench

    print(json.dumps(run_codec_bench(args.records)))
    return 0


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    from cdr_mediation.stack.bench_ingest import run_ingest_bench

    split = 0 if args.workers else 1  # default layout: one ingest and one store worker process
    result = asyncio.run(run_ingest_bench(Path(args.state_dir), args.dlrs, workers=args.workers,
                                          ingest_workers=split, store_workers=split,
                                          partitions=args.partitions, rate=args.rate))
    print(json.dumps(result))
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from cdr_mediation.stack.bench_soak import install_sigterm_as_interrupt, run_soak, soak_exit_status

    install_sigterm_as_interrupt()
    result = asyncio.run(run_soak(Path(args.state_dir), rate=args.rate, minutes=args.minutes, workers=args.workers,
                                  partitions=args.partitions, exporter=args.exporter,
                                  operators=args.operators, bridge_linger_ms=args.bridge_linger_ms,
                                  bridge_max_batch=args.bridge_max_batch))
    return soak_exit_status(result)


def cmd_bench_rollup(args: argparse.Namespace) -> int:
    from cdr_mediation.stack.bench_rollup import run_rollup_bench

    print(json.dumps(asyncio.run(run_rollup_bench(Path(args.state_dir), args.events, partitions=args.partitions))))
    return 0


def cmd_bench_export(args: argparse.Namespace) -> int:
    from cdr_mediation.stack.bench_export import run_export_bench

    print(json.dumps(run_export_bench(Path(args.state_dir), args.records, profile=args.profile)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdrmed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_state_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="stack state directory (default .stack)")
        return p

    stack = sub.add_parser("stack", help="the local stack of real servers").add_subparsers(dest="action", required=True)
    with_state_dir(stack.add_parser("up", help="start every component (idempotent)")).set_defaults(func=cmd_stack_up)
    status = with_state_dir(stack.add_parser("status", help="ask every component a real question"))
    status.add_argument("--json", action="store_true", help="one JSON object: component -> {healthy, endpoint}")
    status.set_defaults(func=cmd_stack_status)
    with_state_dir(stack.add_parser("down", help="stop every component")).set_defaults(func=cmd_stack_down)
    with_state_dir(stack.add_parser("env", help="print CDR_* exports for this stack")).set_defaults(func=cmd_stack_env)

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(dest="action", required=True)
    topics.add_parser("create", help="create every declared topic").set_defaults(func=cmd_topics_create)

    sub.add_parser("worker", help="run a Faust worker").set_defaults(func=cmd_worker)
    sub.add_parser("bridge", help="forward DLRs from NATS JetStream to Kafka").set_defaults(func=cmd_bridge)
    sub.add_parser("portal", help="run the aiohttp portal").set_defaults(func=cmd_portal)

    generate = sub.add_parser("generate", help="publish synthetic DLRs to NATS JetStream")
    generate.add_argument("--rate", type=float, default=100.0, help="DLRs per second")
    generate.add_argument("--count", type=int, default=None, help="stop after N (default: run until stopped)")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--start", default=None, help="done_at of the first DLR (ISO 8601; default now)")
    generate.set_defaults(func=cmd_generate)

    verify = sub.add_parser("verify", help="recompute stored chains and export checkpoints; exit 1 on a break")
    verify.add_argument("--operator", action="append", help="operator id (repeatable; default: all)")
    verify.set_defaults(func=cmd_verify)

    audit = sub.add_parser("audit", help="the audit log (docs/audit.md)").add_subparsers(dest="action", required=True)
    audit_verify = audit.add_parser("verify", help="recompute the audit log's hash chain; exit 1 on a break")
    audit_verify.add_argument("--expect-head", help="AUDIT_SEQ:ENTRY_HASH recorded earlier (a previous report): "
                                                    "the log must still hold it (detects a removed or rewritten tail)")
    audit_verify.set_defaults(func=cmd_audit_verify)
    audit_list = audit.add_parser("list", help="audit entries in order (JSON lines; a last line "
                                               "{\"next_after\": N} when there are more)")
    audit_list.add_argument("--action", dest="audit_action", help="e.g. export.transition, chain.verify")
    audit_list.add_argument("--actor")
    audit_list.add_argument("--operator", help="entries whose refs name this operator_id")
    audit_list.add_argument("--day", type=lambda v: dt.date.fromisoformat(v).isoformat(),
                            help="entries whose refs name this day (YYYY-MM-DD)")
    audit_list.add_argument("--since", help="at >= this (YYYY-MM-DDTHH:MM:SS.ffffffZ or a prefix of it)")
    audit_list.add_argument("--until", help="at < this (same form)")
    audit_list.add_argument("--after", type=int, default=0, help="cursor: entries after this audit_seq")
    audit_list.add_argument("--limit", type=int, default=100)
    audit_list.set_defaults(func=cmd_audit_list)

    outbox = sub.add_parser("outbox", help="the transactional outbox (docs/audit.md)").add_subparsers(
        dest="action", required=True)
    relay = outbox.add_parser("relay", help="publish committed outbox rows to Kafka in order (at least once)")
    relay.add_argument("--once", action="store_true", help="publish what is pending now, then exit")
    relay.set_defaults(func=cmd_outbox_relay)

    clock = sub.add_parser("clock", help="the explicit event-time clock of idle operators").add_subparsers(
        dest="action", required=True)
    tick = clock.add_parser("tick", help="advance operators' event-time clocks (closes their idle hours)")
    tick.add_argument("--operator", action="append", required=True, help="operator id (repeatable)")
    tick.add_argument("--at", default=None, help="the instant, ISO 8601 with offset (e.g. 2026-11-01T12:00:00Z)")
    tick.add_argument("--lag-s", type=float, default=None, help="or: now minus this many seconds")
    tick.add_argument("--allow-future", action="store_true",
                      help="accept an instant more than an hour after the wall clock (refused by default)")
    tick.set_defaults(func=cmd_clock_tick)
    reconcile = sub.add_parser("reconcile", help="recompute a day's closed rollups from the stored CDRs, report differences")
    reconcile.add_argument("--day", required=True, type=dt.date.fromisoformat, help="UTC day, YYYY-MM-DD")
    reconcile.add_argument("--operator", default=None, help="operator id (default: every operator active that day)")
    reconcile.set_defaults(func=cmd_reconcile)

    replay = sub.add_parser("replay", help="rebuild chain heads from the DLR topic into fresh state")
    replay.add_argument("--compare", action="store_true", help="compare with the heads stored in PostgreSQL")
    replay.add_argument("--work-dir", default=None, help="fresh state directory (default <data dir>/replay)")
    replay.set_defaults(func=cmd_replay)

    export = sub.add_parser("export", help="export files: status, and what a person does to them").add_subparsers(
        dest="action", required=True)
    status_cmd = export.add_parser("status", help="exports and their lifecycle states (JSON lines)")
    status_cmd.add_argument("--operator")
    status_cmd.set_defaults(func=cmd_export_status)
    rebuild_cmd = export.add_parser("rebuild", help="build an archived export again and compare it byte for byte "
                                                     "with the archived objects (JSON lines; exit 1 if any differs)")
    rebuild_cmd.add_argument("--operator", required=True)
    rebuild_cmd.add_argument("--day", required=True, type=lambda v: dt.date.fromisoformat(v).isoformat())
    rebuild_cmd.set_defaults(func=cmd_export_rebuild)
    for name, func, help_text in (
            ("resume", cmd_export_resume, "take a MANUAL export back to PENDING once its cause is fixed"),
            ("reissue", cmd_export_reissue, "build a REJECTED export again (the corrected file) and record REBUILT")):
        command = export.add_parser(name, help=help_text)
        command.add_argument("--operator", required=True)
        command.add_argument("--day", required=True, type=lambda v: dt.date.fromisoformat(v).isoformat())
        command.add_argument("--actor", required=True, help="who acts (recorded on the step)")
        command.add_argument("--ticket", required=True, help="the ticket that authorises it (recorded)")
        command.set_defaults(func=func)

    archive = sub.add_parser("archive", help="the S3 archive's cold tier (docs/archive.md)").add_subparsers(
        dest="action", required=True)
    cold = archive.add_parser("cold", help="one pass: move CDRs older than the hot window to S3, then out of "
                                           "PostgreSQL")
    cold.add_argument("--dry-run", action="store_true", help="only list the segments that are eligible")
    cold.add_argument("--operator", action="append", help="operator id (repeatable; default: all)")
    cold.set_defaults(func=cmd_archive_cold)
    restore = archive.add_parser("restore", help="fetch archived entries, verify their chain, make them available")
    restore.add_argument("--operator", required=True, help="operator id")
    restore.add_argument("--from-seq", type=int, required=True, help="first chain_seq")
    restore.add_argument("--to-seq", type=int, required=True, help="last chain_seq (inclusive)")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="write the verified entries to this file (JSON lines, docs/archive.md)")
    target.add_argument("--into-table", choices=["cdr_restored"], help="copy the verified entries into this table")
    restore.set_defaults(func=cmd_archive_restore)
    archive_verify = archive.add_parser("verify", help="download and verify archived segments, restore nothing")
    archive_verify.add_argument("--operator", action="append", help="operator id (repeatable; default: all)")
    archive_verify.set_defaults(func=cmd_archive_verify)

    dev = with_state_dir(sub.add_parser("dev", help="the main job on the local stack"))
    dev.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    dev.add_argument("--rate", type=float, default=50.0, help="synthetic DLRs per second")
    dev.set_defaults(func=cmd_dev)

    bench = sub.add_parser("bench", help="benchmarks (print JSON lines)").add_subparsers(dest="action", required=True)
    codec = bench.add_parser("codec", help="TAP 3.12 streaming encoder")
    codec.add_argument("--records", type=int, default=1_000_000)
    codec.set_defaults(func=cmd_bench_codec)
    ingest = with_state_dir(bench.add_parser("ingest", help="NATS → PostgreSQL through the whole ingest pipeline"))
    ingest.add_argument("--dlrs", type=int, default=200_000)
    ingest.add_argument("--workers", type=int, default=0,
                        help="N worker processes running both agents (default: one ingest + one store worker)")
    ingest.add_argument("--partitions", type=int, default=4)
    ingest.add_argument("--rate", type=float, default=None,
                        help="offer DLRs at this rate per second (default: as fast as JetStream acks them)")
    ingest.set_defaults(func=cmd_bench_ingest)
    soak = with_state_dir(bench.add_parser("soak", help="a steady DLR rate through the whole pipeline: per-minute "
                                                        "JSON lines, then a summary (exit 1 if DLRs were lost)"))
    soak.add_argument("--rate", type=float, required=True, help="DLRs per second offered to JetStream")
    soak.add_argument("--minutes", type=float, required=True, help="how long to publish (then drain)")
    soak.add_argument("--workers", type=int, default=2, help="worker processes, each running every agent")
    soak.add_argument("--partitions", type=int, default=4)
    soak.add_argument("--operators", type=int, default=8, help="operators the synthetic DLRs are spread over")
    soak.add_argument("--bridge-max-batch", type=int, default=None,
                      help="CDR_BRIDGE_MAX_BATCH of the bridge: at most this many DLRs per gather (default 1000)")
    soak.add_argument("--bridge-linger-ms", type=int, default=None,
                      help="CDR_BRIDGE_LINGER_MS of the bridge: DLRs per Kafka record. On the local Tansu broker "
                           "every fetch costs in proportion to the record batches a partition holds, so a long "
                           "soak needs few, large batches (README, Soak)")
    soak.add_argument("--exporter", action="store_true", help="workers also run the exporter (closed days are "
                                                               "exported, signed and delivered)")
    soak.set_defaults(func=cmd_bench_soak)
    rollup = with_state_dir(bench.add_parser("rollup", help="the rollup agent alone over CDRs already in the topic"))
    rollup.add_argument("--events", type=int, default=200_000)
    rollup.add_argument("--partitions", type=int, default=4)
    rollup.set_defaults(func=cmd_bench_rollup)
    export = with_state_dir(bench.add_parser("export", help="one day's export file of N records: build, HSM sign, "
                                                            "SFTP delivery"))
    export.add_argument("--records", type=int, default=100_000)
    export.add_argument("--profile", choices=("ed25519", "ecdsa-p256"), default="ed25519",
                        help="signature profile (CDR_EXPORT_SIGNATURE_PROFILE)")
    export.set_defaults(func=cmd_bench_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
