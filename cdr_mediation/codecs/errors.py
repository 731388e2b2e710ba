"""The codec's errors.

Every validation failure is one `CodecValidationError` that says *where*: the record (its
1-based position in the file and its cdr_id) or the part of the file (header, audit, RAP
structure), the field path in ASN.1 member names, and *why*. Engineers read these in logs
and auditors read them in rejection reports, so the message is the whole story:

    record 17 (cdr_id=c-42): scuTimeStamps.completionTimeStamp (done_at): '2026-13-01T...' is not ...
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class of everything the codecs raise on purpose."""


class CodecValidationError(CodecError, ValueError):
    """Input that cannot be encoded (or bytes that do not decode to a valid structure).

    `record_index` is the 1-based position of the call event in the file (the order of
    `callEventDetails`, which is chain order), `cdr_id` the record's identifier, `path` the
    ASN.1 member path inside the record or structure, `source_field` the `Cdr` attribute the
    value came from (when there is one) and `reason` the rule that failed.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        record_index: int | None = None,
        cdr_id: str | None = None,
        source_field: str | None = None,
        scope: str | None = None,
    ) -> None:
        self.path = path
        self.reason = reason
        self.record_index = record_index
        self.cdr_id = cdr_id
        self.source_field = source_field
        self.scope = scope
        super().__init__(self._render())

    def _render(self) -> str:
        if self.record_index is not None:
            where = f"record {self.record_index} (cdr_id={self.cdr_id})"
        else:
            where = self.scope or "file"
        field = self.path if self.source_field is None else f"{self.path} ({self.source_field})"
        return f"{where}: {field}: {self.reason}"

    def for_record(self, record_index: int, cdr_id: str | None) -> "CodecValidationError":
        """The same failure, attributed to a record (rules are written without knowing it)."""
        return CodecValidationError(
            self.path,
            self.reason,
            record_index=record_index,
            cdr_id=cdr_id,
            source_field=self.source_field,
        )

    def __reduce__(self):
        # Crosses process boundaries whole (a large file's later part is encoded in a helper).
        return _validation_error, (self.path, self.reason, self.record_index, self.cdr_id, self.source_field,
                                   self.scope)


def _validation_error(path: str, reason: str, record_index: int | None, cdr_id: str | None,
                      source_field: str | None, scope: str | None) -> CodecValidationError:
    return CodecValidationError(path, reason, record_index=record_index, cdr_id=cdr_id, source_field=source_field,
                                scope=scope)


class CodecDecodeError(CodecError, ValueError):
    """Bytes that are not a well-formed TAP/RAP structure of the supported kinds."""
