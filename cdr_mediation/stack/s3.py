"""An S3 endpoint with object lock: moto's server (in memory), with the archive bucket created.

The bucket is created with object lock enabled and a default COMPLIANCE retention, right after
creation (moto, like S3, refuses to set the default on a non-empty bucket).
"""

from __future__ import annotations

import sys

from cdr_mediation.stack.component import Component
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, wait_until

BUCKET = "cdr-archive"
REGION = "us-east-1"
# moto accepts any credentials; these name the local stack, they protect nothing.
ACCESS_KEY = "cdr-stack"
SECRET_KEY = "cdr-stack-secret"
DEFAULT_RETENTION_DAYS = 7 * 365


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )


class S3(Component):
    name = "s3"

    def start(self) -> None:
        if self.health().healthy:
            return
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise StackError("PyPI package 'moto[server]' is not installed; run scripts/bootstrap") from exc
        port = self.port()
        endpoint = f"http://127.0.0.1:{port}"
        daemon = self.daemon(marker="moto.server")
        daemon.stop()
        daemon.start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
        self.state.update_manifest(
            self.name, {"port": port, "endpoint": endpoint, "bucket": BUCKET, "region": REGION}
        )
        try:
            wait_until(lambda: _client(endpoint).list_buckets() is not None, timeout=30, what="S3 (moto)")
        except StackError as exc:
            raise StackError(f"{exc}\n{daemon.exited_early()}") from None
        client = _client(endpoint)
        client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": DEFAULT_RETENTION_DAYS}},
            },
        )

    def health(self) -> Health:
        config = self.config
        endpoint = config.get("endpoint", "")
        if not config or not self.daemon("moto.server").running():
            return Health(False, endpoint, "not running")
        try:
            lock = _client(endpoint).get_object_lock_configuration(Bucket=BUCKET)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return Health(False, endpoint, f"bucket {BUCKET}: {exc}")
        enabled = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        return Health(enabled, endpoint, "" if enabled else "object lock not enabled")

    def stop(self) -> None:
        self.daemon("moto.server").stop()
