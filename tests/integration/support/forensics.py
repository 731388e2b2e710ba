"""What a failed chaos run leaves for the next person: the CDR topic's chains as Kafka holds them.

A chaos failure is usually seen late (rows missing after minutes, a rollup refusing a record) and
the stack is torn down with the session, so the evidence must be taken before the assertion
propagates. `write_forensics` reads the CDR topic and the table changelogs to their ends, finds
every break in each operator's chain as the topic holds it (the first chain_seq of a record that
does not follow the highest seen so far), and records the group's committed offsets. It writes
`forensics.json` into the run's directory and returns a one-paragraph summary for the assertion.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from cdr_mediation.codecs.records import UndecodableRecord, decode_cdr_topic_record
from cdr_mediation.domain.rollup import ClockTick
from cdr_mediation.stack.pipeline import LocalPipeline
from tests.integration.support.observe import read_topic


def chain_breaks_in_topic(records) -> dict[str, dict]:
    """Per operator: records, entries, re-emitted entries, and each break (seq jumps) with its offset."""
    report: dict[str, dict] = defaultdict(lambda: {"records": 0, "entries": 0, "re_emitted": 0, "breaks": [],
                                                   "forks": []})
    highest: dict[str, int] = {}
    # The first (hash, partition, offset) seen per (operator, chain_seq): a re-emission must repeat
    # the hash; another hash at the same place is a fork (two versions of the chain in the topic).
    first_seen: dict[tuple[str, int], tuple[str, int, int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            decoded = decode_cdr_topic_record(record.value)
        except UndecodableRecord as exc:
            report["<undecodable>"]["breaks"].append({"partition": record.partition, "offset": record.offset,
                                                      "error": str(exc)})
            continue
        if isinstance(decoded, ClockTick):
            continue
        operator_id = (record.key or b"").decode("utf-8", "replace")
        seqs = [entry["chain_seq"] for entry, _ in decoded]
        item = report[operator_id]
        for entry, digest in decoded:
            seen = first_seen.setdefault((operator_id, entry["chain_seq"]), (digest, record.partition, record.offset))
            if seen[0] != digest and len(item["forks"]) < 5:
                item["forks"].append({"chain_seq": entry["chain_seq"], "cdr_id": entry["cdr_id"],
                                      "first": {"hash": seen[0], "partition": seen[1], "offset": seen[2]},
                                      "then": {"hash": digest, "partition": record.partition, "offset": record.offset}})
        item["records"] += 1
        item["entries"] += len(seqs)
        top = highest.get(operator_id, 0)
        item["re_emitted"] += sum(1 for seq in seqs if seq <= top)
        fresh = [seq for seq in seqs if seq > top]
        if fresh and fresh[0] != top + 1:
            item["breaks"].append({"partition": record.partition, "offset": record.offset,
                                   "expected": top + 1, "found": fresh[0]})
        if fresh:
            highest[operator_id] = max(fresh)
    for operator_id, top in highest.items():
        report[operator_id]["highest_chain_seq"] = top
    return dict(report)


async def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[str, dict[int, int | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        out: dict[str, dict[int, int | None]] = {}
        for topic in topics:
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            out[topic] = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
        return out
    finally:
        await consumer.stop()


async def stored_chain_gaps(dsn: str, operator_prefix: str) -> dict[str, dict]:
    """Per operator in PostgreSQL: rows, highest chain_seq and the first missing runs of chain_seq."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT operator_id, count(*) AS rows, max(chain_seq) AS highest,
                      (SELECT array_agg(g) FROM (
                          SELECT c.chain_seq + 1 AS g FROM cdr c
                          WHERE c.operator_id = o.operator_id AND NOT EXISTS (
                              SELECT 1 FROM cdr d WHERE d.operator_id = c.operator_id AND d.chain_seq = c.chain_seq + 1)
                          ORDER BY c.chain_seq LIMIT 4) AS gaps) AS missing_from
               FROM cdr o WHERE operator_id LIKE $1 GROUP BY operator_id ORDER BY operator_id""",
            f"{operator_prefix}%")
    finally:
        await conn.close()
    return {r["operator_id"]: {"rows": r["rows"], "highest": r["highest"], "missing_from": r["missing_from"]}
            for r in rows}


async def write_forensics(run: LocalPipeline) -> str:
    bootstrap = run.env["CDR_KAFKA_BOOTSTRAP"]
    app_id = run.env["CDR_APP_ID"]
    cdr_topic, dlr_topic = run.topic("cdr.v1"), run.topic("dlr.v1")
    cdr_records = await read_topic(bootstrap, cdr_topic)
    chains = chain_breaks_in_topic(cdr_records)
    changelogs, rollup_heads, ingest_regressions = {}, {}, {}
    for table in ("ingest-state", "rollup-state"):
        records = await read_topic(bootstrap, f"{app_id}-{table}-changelog")
        changelogs[table] = dict(sorted(Counter(r.partition for r in records).items()))
        if table == "ingest-state":
            # An operator's ingest state must only move forward in its changelog; a state written
            # with a lower chain_seq after a higher one means a worker worked from stale state.
            last: dict[str, tuple[int, int, int]] = {}
            for record in records:
                if not record.key or not record.key.startswith(b'"state:') or not record.value:
                    continue
                operator_id, value = json.loads(record.key)[len("state:"):], json.loads(record.value)
                now = (value["chain_seq"], value["applied_offset"], record.offset)
                before = last.get(operator_id)
                if before is not None and (now[0] < before[0] or now[1] < before[1]):
                    ingest_regressions.setdefault(operator_id, []).append(
                        {"changelog_offset": record.offset, "from": {"chain_seq": before[0], "applied_offset": before[1]},
                         "to": {"chain_seq": now[0], "applied_offset": now[1]}})
                last[operator_id] = now
        if table == "rollup-state":  # the last state per operator, as a fresh restore would see it
            for record in records:
                value = json.loads(record.value) if record.value else {}
                rollup_heads[json.loads(record.key)] = {"changelog": f"{record.partition}:{record.offset}",
                                                        "last_chain_seq": value.get("last_chain_seq")}
    report = {
        "cdr_topic_records": dict(sorted(Counter(r.partition for r in cdr_records).items())),
        "chains_in_cdr_topic": chains,
        "changelog_records": changelogs,
        "rollup_state_in_changelog": rollup_heads,
        "ingest_state_regressions": ingest_regressions,
        "committed": await committed_offsets(bootstrap, app_id, [dlr_topic, cdr_topic]),
        "stored": await stored_chain_gaps(run.env["CDR_PG_DSN"], f"{run.namespace}-"),
    }
    (run.work_dir / "forensics.json").write_text(json.dumps(report, indent=2, default=str))
    broken = {op: {"breaks": item["breaks"][:3], "forks": item["forks"][:3]}
              for op, item in chains.items() if item["breaks"] or item["forks"]}
    return (f"forensics ({run.work_dir / 'forensics.json'}): chain breaks and forks in the CDR topic: {broken or 'none'}; "
            f"CDR topic records per partition {report['cdr_topic_records']}; changelog records {changelogs}; "
            f"rollup heads in the changelog {rollup_heads}; "
            f"ingest states going backwards in the changelog {({k: v[:3] for k, v in ingest_regressions.items()}) or 'none'}; "
            f"committed {report['committed']}; stored (the last missing_from is past the head) {report['stored']}")
