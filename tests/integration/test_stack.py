"""Every server of the local stack answers a real request, and `stack down` leaves nothing behind."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import asyncssh
import pytest

from cdr_mediation.stack.process import pid_alive


def test_every_component_is_healthy_on_loopback(stack):
    status = stack.status()
    assert set(status) == {"nats", "kafka", "postgres", "hsm", "sftp", "s3", "regulator"}
    for name, health in status.items():
        assert health.healthy, f"{name}: {health.detail}"
        if name != "hsm":
            assert "127.0.0.1" in health.endpoint


# --- NATS JetStream ---------------------------------------------------------------------------

async def test_jetstream_publish_and_durable_consume(stack_env):
    import nats

    nc = await nats.connect(stack_env["CDR_NATS_URL"])
    try:
        js = nc.jetstream()
        stream = f"T{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for n in range(3):
            ack = await js.publish(f"{stream}.op", f"m{n}".encode(), headers={"Nats-Msg-Id": f"id-{n}"})
            assert ack.stream == stream and not ack.duplicate
        # The same Nats-Msg-Id again is recognised as a duplicate by the server.
        assert (await js.publish(f"{stream}.op", b"m0", headers={"Nats-Msg-Id": "id-0"})).duplicate

        sub = await js.pull_subscribe(f"{stream}.>", durable="bridge", stream=stream)
        messages = await sub.fetch(3, timeout=5)
        assert [m.data for m in messages] == [b"m0", b"m1", b"m2"]
        for message in messages:
            await message.ack_sync()
        info = await js.consumer_info(stream, "bridge")
        assert info.num_ack_pending == 0 and info.delivered.stream_seq == 3
        # A new subscription on the same durable resumes after the acked messages.
        again = await js.pull_subscribe(f"{stream}.>", durable="bridge", stream=stream)
        with pytest.raises(nats.errors.TimeoutError):
            await again.fetch(1, timeout=0.5)
    finally:
        await nc.close()


# --- Kafka (Tansu) ----------------------------------------------------------------------------

async def test_kafka_produce_and_consumer_group_consume(stack_env):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.structs import TopicPartition

    bootstrap = stack_env["CDR_KAFKA_BOOTSTRAP"]
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, key=f"op-{n % 2}".encode(), value=f"v{n}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=1000)
    await consumer.start()
    try:
        seen = []
        while len(seen) < 10:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            seen += [record.value for records in batches.values() for record in records]
        await consumer.commit()
        assert sorted(seen) == sorted(f"v{n}".encode() for n in range(10))
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
        assert sum(committed) == 10
    finally:
        await consumer.stop()


# --- PostgreSQL -------------------------------------------------------------------------------

def _cdr_row(seq: int) -> tuple:
    done = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seq)
    return ("op-test", seq, "CDR", f"cdr-{uuid.uuid4()}", f"dlr-{seq}", f"msg-{seq}", "tenant-a", "BANKCO",
            "+447700900123", "DELIVERED", done, done, 1, True, 5, 5, 1, "EUR", "p1", None, "smsc-1",
            None, None, None, "0" * 64, f"{seq:064x}")


COLUMNS = ("operator_id, chain_seq, record_type, cdr_id, dlr_id, message_id, tenant_id, sender_id, msisdn, "
           "status, submitted_at, done_at, segments, billable, unit_price_minor, amount_minor, tax_minor, "
           "currency, pricing_version, error_code, smsc_id, ref_cdr_id, ticket_ref, actor, prev_hash, record_hash")


async def _insert(conn, seq: int) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, 27))
    await conn.execute(f"INSERT INTO cdr ({COLUMNS}) VALUES ({placeholders})", *_cdr_row(seq))


async def test_app_role_inserts_but_cannot_update_delete_or_truncate(stack_env):
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        role = await conn.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert not role["rolsuper"] and not role["rolbypassrls"]
        owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'cdr'")
        assert owner != await conn.fetchval("SELECT current_user")
        seq = int(uuid.uuid4().int % 1_000_000) + 1
        await _insert(conn, seq)
        assert await conn.fetchval("SELECT count(*) FROM cdr WHERE chain_seq = $1 AND operator_id = 'op-test'", seq) == 1
        for statement in ("UPDATE cdr SET amount_minor = 0 WHERE chain_seq = $1",
                          "DELETE FROM cdr WHERE chain_seq = $1"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute(statement, seq)
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE cdr")
        assert await conn.fetchval("SELECT amount_minor FROM cdr WHERE chain_seq = $1 AND operator_id = 'op-test'", seq) == 5
    finally:
        await conn.close()


async def test_triggers_refuse_mutation_even_for_the_table_owner(stack):
    # Privileges stop the app role; the triggers stop everyone else who is not a superuser
    # disabling them on purpose — including the owner that migrations run as.
    postgres = stack.components["postgres"]
    conn = await postgres._superuser("cdr")
    try:
        await conn.execute("SET ROLE cdr_owner")
        seq = int(uuid.uuid4().int % 1_000_000) + 1_000_001
        await _insert(conn, seq)
        for statement in ("UPDATE cdr SET amount_minor = 0 WHERE chain_seq = $1", "DELETE FROM cdr WHERE chain_seq = $1"):
            with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only"):
                await conn.execute(statement, seq)
        with pytest.raises(asyncpg.exceptions.RaiseError, match="append-only: TRUNCATE refused"):
            await conn.execute("TRUNCATE cdr")
    finally:
        await conn.close()


async def test_migrations_are_recorded_with_checksums(stack_env):
    conn = await asyncpg.connect(stack_env["CDR_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1)) and rows
    assert all(len(r["checksum"].strip()) == 64 for r in rows)


# --- HSM (SoftHSM2 over PKCS#11) ---------------------------------------------------------------

HSM_CHECK = """
import json, sys
from cdr_mediation.infra.hsm import HsmConfig, HsmSigner, SignatureProfile, verify
from cdr_mediation.stack.hsm import KEY_LABELS
env = json.loads(sys.argv[1])
config = HsmConfig(env["CDR_HSM_MODULE"], env["CDR_HSM_TOKEN_LABEL"], env["CDR_HSM_PIN"], env["CDR_HSM_SOFTHSM2_CONF"])
data = b"TD57 export file bytes"
report = {}
with HsmSigner(config) as signer:
    for profile, label in KEY_LABELS.items():
        signature = signer.sign(label, profile, data)
        public = signer.public_key(label, profile)
        report[profile.value] = {
            "valid": verify(public, profile, data, signature),
            "tampered_data": verify(public, profile, data + b"!", signature),
            "signature_len": len(signature),
        }
print(json.dumps(report))
"""


def test_hsm_signs_with_ed25519_and_p256_and_signatures_verify(stack_env):
    # In a child process: SoftHSM2 reads SOFTHSM2_CONF once per process.
    result = subprocess.run([sys.executable, "-c", HSM_CHECK, json.dumps(stack_env)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ed25519"] == {"valid": True, "tampered_data": False, "signature_len": 64}
    assert report["ecdsa-p256"]["valid"] and not report["ecdsa-p256"]["tampered_data"]


def test_hsm_wrong_pin_is_a_clear_error(stack_env):
    env = {**stack_env, "CDR_HSM_PIN": "wrong-pin"}
    result = subprocess.run([sys.executable, "-c", HSM_CHECK, json.dumps(env)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "HsmError" in result.stderr and "cdr-signing" in result.stderr and "PinIncorrect" in result.stderr


# --- SFTP drop box ----------------------------------------------------------------------------

async def test_sftp_upload_with_key_and_password_refused(stack_env):
    host, port, user = stack_env["CDR_SFTP_HOST"], int(stack_env["CDR_SFTP_PORT"]), stack_env["CDR_SFTP_USER"]
    name = f"probe-{uuid.uuid4().hex[:8]}.zip"
    async with asyncssh.connect(host, port=port, username=user, client_keys=[stack_env["CDR_SFTP_KEY_PATH"]],
                                known_hosts=stack_env["CDR_SFTP_KNOWN_HOSTS"]) as conn:
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(f"{stack_env['CDR_SFTP_REMOTE_DIR']}/{name}", "wb") as remote:
                await remote.write(b"PK\x05\x06" + bytes(18))
            assert name in await sftp.listdir(stack_env["CDR_SFTP_REMOTE_DIR"])
        # key-only server: no shell either
        result = await conn.run("id", check=False)
        assert "uid=" not in (result.stdout or "")
    dropbox = Path(stack_env["CDR_SFTP_KEY_PATH"]).parent / "dropbox"
    assert (dropbox / stack_env["CDR_SFTP_REMOTE_DIR"] / name).read_bytes() == b"PK\x05\x06" + bytes(18)

    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(host, port=port, username=user, password="anything", client_keys=None,
                               known_hosts=stack_env["CDR_SFTP_KNOWN_HOSTS"], agent_path=None)
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(host, port=port, username=user, client_keys=[stranger],
                               known_hosts=stack_env["CDR_SFTP_KNOWN_HOSTS"], agent_path=None)


# --- S3 with object lock ----------------------------------------------------------------------

async def test_s3_compliance_retention_refuses_delete(stack_env):
    import aioboto3
    from botocore.exceptions import ClientError

    session = aioboto3.Session(aws_access_key_id=stack_env["CDR_S3_ACCESS_KEY"],
                               aws_secret_access_key=stack_env["CDR_S3_SECRET_KEY"],
                               region_name=stack_env["CDR_S3_REGION"])
    bucket, key = stack_env["CDR_S3_BUCKET"], f"probe/{uuid.uuid4().hex}.zip"
    retain_until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7 * 365)
    async with session.client("s3", endpoint_url=stack_env["CDR_S3_ENDPOINT"]) as s3:
        put = await s3.put_object(Bucket=bucket, Key=key, Body=b"signed export", ObjectLockMode="COMPLIANCE",
                                  ObjectLockRetainUntilDate=retain_until)
        head = await s3.head_object(Bucket=bucket, Key=key, VersionId=put["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365 * 6)
        with pytest.raises(ClientError) as refused:
            await s3.delete_object(Bucket=bucket, Key=key, VersionId=put["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError):
            await s3.delete_object(Bucket=bucket, Key=key, VersionId=put["VersionId"], BypassGovernanceRetention=True)
        body = await (await s3.get_object(Bucket=bucket, Key=key, VersionId=put["VersionId"]))["Body"].read()
        assert body == b"signed export"


async def test_s3_bucket_default_retention_applies_to_plain_puts(stack_env):
    import aioboto3

    session = aioboto3.Session(aws_access_key_id=stack_env["CDR_S3_ACCESS_KEY"],
                               aws_secret_access_key=stack_env["CDR_S3_SECRET_KEY"],
                               region_name=stack_env["CDR_S3_REGION"])
    async with session.client("s3", endpoint_url=stack_env["CDR_S3_ENDPOINT"]) as s3:
        key = f"probe/{uuid.uuid4().hex}"
        put = await s3.put_object(Bucket=stack_env["CDR_S3_BUCKET"], Key=key, Body=b"x")
        head = await s3.head_object(Bucket=stack_env["CDR_S3_BUCKET"], Key=key, VersionId=put["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365 * 6)


# --- the CLI: up, status --json, down -----------------------------------------------------------

def _group_members(leaders: list[int]) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in leaders:
                    members.add(int(entry.name))
            except ProcessLookupError:
                pass
    return members


def test_cli_up_status_down_leaves_no_process(tmp_path_factory, repo_root):
    state_dir = repo_root / ".stack-test" / f"cli-{uuid.uuid4().hex[:6]}"
    cdrmed = [sys.executable, "-m", "cdr_mediation.cli"]
    try:
        up = subprocess.run([*cdrmed, "stack", "up", "--state-dir", str(state_dir)], capture_output=True, text=True,
                            timeout=120)
        assert up.returncode == 0, up.stderr
        # `stack up` has exited: from here on only pid files know the daemons (as after a crash).
        status = subprocess.run([*cdrmed, "stack", "status", "--json", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout
        report = json.loads(status.stdout)
        assert set(report) == {"nats", "kafka", "postgres", "hsm", "sftp", "s3", "regulator"}
        assert all(c["healthy"] and set(c) >= {"healthy", "endpoint"} for c in report.values()), report
        leaders = [int(p.read_text()) for p in state_dir.glob("*/*.pid")]
        assert len(leaders) == 6  # every component but the HSM token runs a server process
        processes = _group_members(leaders)
        assert processes >= set(leaders)
    finally:
        down = subprocess.run([*cdrmed, "stack", "down", "--state-dir", str(state_dir)], capture_output=True,
                              text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    left = [pid for pid in processes if pid_alive(pid)]
    assert not left, f"processes left after stack down: {left}"
    assert not list(state_dir.glob("*/*.pid"))
    after = subprocess.run([*cdrmed, "stack", "status", "--json", "--state-dir", str(state_dir)],
                           capture_output=True, text=True, timeout=60)
    servers = {name: c for name, c in json.loads(after.stdout).items() if name != "hsm"}  # the token is files
    assert after.returncode == 1 and not any(c["healthy"] for c in servers.values()), servers
