"""What can go wrong when a file is handed to the regulator, sorted by what the lifecycle does next.

The export lifecycle (DESIGN.md §6/§7) retries a delivery with backoff up to a deadline and
then moves the export to MANUAL. It must therefore know, from the exception alone, whether a
later attempt can succeed: `RetryableDeliveryError` (the endpoint is down, slow or dropped the
connection) or `PermanentDeliveryError` (we were refused, or the receiver already holds other
bytes under that name): retrying those only delays the alert a human must act on.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery or a response fetch failed; `channel` is "sftp" or "https"."""

    retryable: bool = False

    def __init__(self, message: str, *, channel: str, file_name: str | None = None) -> None:
        super().__init__(f"{channel}: {message}")
        self.channel = channel
        self.file_name = file_name


class RetryableDeliveryError(DeliveryError):
    """The endpoint may accept the same request later: connection refused or reset, time-out,
    server error. Nothing was stored under the final name by this attempt."""

    retryable = True


class EndpointUnavailable(RetryableDeliveryError):
    """The endpoint could not be reached or dropped the connection (refused, reset, timed out)."""


class PermanentDeliveryError(DeliveryError):
    """Retrying the same request cannot succeed; a person must change something first."""


class AccessRefused(PermanentDeliveryError):
    """The endpoint refused our identity (SSH key, client certificate) or we refused its
    (unknown host key, server certificate not signed by the configured CA)."""


class InvalidFileName(PermanentDeliveryError):
    """The name cannot be used as a single file name on the regulator's side."""


class DeliveryConflict(PermanentDeliveryError):
    """The receiver already holds different bytes under this file name.

    A file name stands for one sequence number, so this is never overwritten: either the
    file was rebuilt with different content (a determinism bug) or the name was reused.
    """

    def __init__(self, *, channel: str, file_name: str, sha256: str, existing_sha256: str | None) -> None:
        existing = f"sha256 {existing_sha256}" if existing_sha256 else "different bytes"
        super().__init__(
            f"{file_name}: the receiver already holds {existing} under this name; refusing to deliver sha256 {sha256}",
            channel=channel, file_name=file_name,
        )
        self.sha256 = sha256
        self.existing_sha256 = existing_sha256
