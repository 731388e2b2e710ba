"""TAP 3.12 (GSMA TD.57): one operator's CDRs as a TransferBatch of ServiceCentreUsage records,
or a Notification when there are none. See docs/codecs.md."""

from .reader import TapFileView, TapRecordView, decode_tap_file
from .writer import TapBatchEncoder, TapFileSummary, TapFileWriter, encode_tap_file, write_tap_file

__all__ = [
    "TapBatchEncoder",
    "TapFileSummary",
    "TapFileView",
    "TapFileWriter",
    "TapRecordView",
    "decode_tap_file",
    "encode_tap_file",
    "write_tap_file",
]
