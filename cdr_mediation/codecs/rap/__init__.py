"""RAP 1.05 (GSMA TD.32): returns and acknowledgements, read and written as canonical BER."""

from .codec import decode_rap, encode_rap
from .model import (
    Acknowledgement,
    DateTimeLong,
    ErrorContext,
    ErrorDetail,
    FatalReturn,
    GroupError,
    MissingReturn,
    RapAuditControl,
    RapBatchControl,
    RapFile,
    ReturnBatch,
    SevereReturn,
    StopReturn,
    return_batch,
    severe_return_amounts,
)

__all__ = [
    "Acknowledgement",
    "DateTimeLong",
    "ErrorContext",
    "ErrorDetail",
    "FatalReturn",
    "GroupError",
    "MissingReturn",
    "RapAuditControl",
    "RapBatchControl",
    "RapFile",
    "ReturnBatch",
    "SevereReturn",
    "StopReturn",
    "decode_rap",
    "encode_rap",
    "return_batch",
    "severe_return_amounts",
]
