"""Delivery of signed export files to the regulator, over SFTP or HTTPS (mTLS), and fetching its answers.

Both adapters have the same surface, so the export lifecycle does not care which channel an
operator uses:

    receipt = await channel.deliver(file_name, data)      # DeliveryReceipt: STORED or ALREADY_DELIVERED
    answers = await channel.fetch_responses(file_name)    # [ResponseFile]: NAME.ack / NAME.rap

and the same exceptions: `RetryableDeliveryError` (retry with backoff) or
`PermanentDeliveryError` (`AccessRefused`, `DeliveryConflict`, `InvalidFileName`: a person must
act). A file is known by name and SHA-256 (`files.py`), so delivering it again is harmless.
"""

from cdr_mediation.infra.delivery.errors import (
    AccessRefused,
    DeliveryConflict,
    DeliveryError,
    EndpointUnavailable,
    InvalidFileName,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from cdr_mediation.infra.delivery.files import AnswerKind, TapFileName, response_name
from cdr_mediation.infra.delivery.results import DeliveryReceipt, Outcome, ResponseFile

__all__ = [
    "AccessRefused",
    "AnswerKind",
    "DeliveryConflict",
    "DeliveryError",
    "DeliveryReceipt",
    "EndpointUnavailable",
    "InvalidFileName",
    "Outcome",
    "PermanentDeliveryError",
    "ResponseFile",
    "RetryableDeliveryError",
    "TapFileName",
    "response_name",
]
