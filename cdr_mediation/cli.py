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
    from aiohttp import web

    from cdr_mediation.infra.hsm import HsmConfig, HsmSigner
    from cdr_mediation.infra.readiness import hsm_probe, kafka_probe, postgres_probe
    from cdr_mediation.portal.app import create_portal
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
    portal = create_portal(probes, pg_dsn=settings.pg_dsn.get_secret_value(), worker_urls=settings.worker_urls)
    web.run_app(portal, host=settings.portal_host, port=settings.portal_port, print=None, access_log=None)
    return 0


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
    import asyncpg

    from cdr_mediation.agents.verifier import verification_report, verify_stored_chains
    from cdr_mediation.runtime import start_process

    process = start_process("verify", worker=False, metrics=False)

    async def verify() -> list:
        conn = await asyncpg.connect(process.settings.pg_dsn.get_secret_value())
        try:
            return await verify_stored_chains(conn, args.operator or None)
        finally:
            await conn.close()

    results = asyncio.run(verify())
    for result in results:
        print(json.dumps(verification_report(result)))
    return 0 if results and all(r.ok for r in results) else 1


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

    verify = sub.add_parser("verify", help="recompute stored chains and report the first break")
    verify.add_argument("--operator", action="append", help="operator id (repeatable; default: all)")
    verify.set_defaults(func=cmd_verify)

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
