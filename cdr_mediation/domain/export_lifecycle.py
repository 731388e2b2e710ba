"""The lifecycle of one export file (DESIGN.md §6) as an explicit transition table.

Every move an export may make is a row of `TRANSITIONS`; anything else raises
`IllegalTransition` (as aiokafka's `TransactionState` does), so a bug or a stray message cannot
take an acknowledged file back to "delivered" or sign a file that was never built. The exporter
persists each transition with an audit row; this module only decides.

    PENDING ─built─▶ BUILT ─signed─▶ SIGNED ─delivered─▶ DELIVERED ─acked─▶ ACKED (final)
    DELIVERED ─rejected─▶ REJECTED ─rebuilt─▶ REBUILT ─signed─▶ SIGNED
    DELIVERED ─timed_out─▶ TIMED_OUT ─redelivered─▶ DELIVERED   (or a late acked / rejected)
    any state but ACKED / MANUAL ─deadline_passed─▶ MANUAL ─manually_delivered─▶ DELIVERED
                                                           (or the regulator's acked / rejected)
    SIGNED ─delivery_refused─▶ MANUAL ─resumed─▶ PENDING       (a person fixed the cause)

* A failure that leaves the file where it is (HSM locked while BUILT, SFTP down while SIGNED)
  is not a transition: the exporter retries with `retry_delay` until the deadline, when the file
  goes to MANUAL (an alert).
* A rejection (RAP) comes back for a delivered file, or late for one that timed out; the
  corrected file is rebuilt under the same file sequence number (TD.57: a rejected file is
  replaced, not numbered anew) and signed again.
* A late ACK for a timed-out or manual file is still an ACK.
* A permanent refusal of the delivery (access refused, other bytes under the name) goes to
  MANUAL at once: retrying cannot help, and waiting for the deadline only delays the alert.
* `resumed` (`cdrmed export resume`) takes a MANUAL file back to PENDING once a person has fixed
  what stopped it; every step is idempotent (the build gives the recorded bytes, the signature
  at hand is reused, the receiver already holding the files says so), so resuming never makes a
  second file.
* ACKED is final.
"""

from __future__ import annotations

import enum
from typing import Mapping


class ExportState(str, enum.Enum):
    PENDING = "PENDING"
    BUILT = "BUILT"
    SIGNED = "SIGNED"
    DELIVERED = "DELIVERED"
    ACKED = "ACKED"
    REJECTED = "REJECTED"
    REBUILT = "REBUILT"
    TIMED_OUT = "TIMED_OUT"
    MANUAL = "MANUAL"


class ExportEvent(str, enum.Enum):
    BUILT = "built"
    SIGNED = "signed"
    DELIVERED = "delivered"
    ACKED = "acked"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    REDELIVERED = "redelivered"
    REBUILT = "rebuilt"
    DEADLINE_PASSED = "deadline_passed"
    MANUALLY_DELIVERED = "manually_delivered"
    DELIVERY_REFUSED = "delivery_refused"
    RESUMED = "resumed"


S, E = ExportState, ExportEvent

TRANSITIONS: Mapping[tuple[ExportState, ExportEvent], ExportState] = {
    (S.PENDING, E.BUILT): S.BUILT,
    (S.BUILT, E.SIGNED): S.SIGNED,
    (S.SIGNED, E.DELIVERED): S.DELIVERED,
    (S.DELIVERED, E.ACKED): S.ACKED,
    (S.DELIVERED, E.REJECTED): S.REJECTED,
    (S.DELIVERED, E.TIMED_OUT): S.TIMED_OUT,
    (S.TIMED_OUT, E.REDELIVERED): S.DELIVERED,
    (S.TIMED_OUT, E.ACKED): S.ACKED,
    (S.TIMED_OUT, E.REJECTED): S.REJECTED,
    (S.REJECTED, E.REBUILT): S.REBUILT,
    (S.REBUILT, E.SIGNED): S.SIGNED,
    (S.MANUAL, E.MANUALLY_DELIVERED): S.DELIVERED,
    (S.MANUAL, E.ACKED): S.ACKED,
    (S.MANUAL, E.REJECTED): S.REJECTED,
    (S.SIGNED, E.DELIVERY_REFUSED): S.MANUAL,
    (S.MANUAL, E.RESUMED): S.PENDING,
    **{(state, E.DEADLINE_PASSED): S.MANUAL
       for state in (S.PENDING, S.BUILT, S.SIGNED, S.DELIVERED, S.TIMED_OUT, S.REJECTED, S.REBUILT)},
}

FINAL_STATES = frozenset({S.ACKED})


class IllegalTransition(ValueError):
    def __init__(self, state: ExportState, event: ExportEvent) -> None:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        super().__init__(f"an export in {state.value} cannot take {event.value!r} "
                         f"(allowed: {', '.join(allowed) or 'nothing, it is final'})")
        self.state, self.event = state, event


def next_state(state: ExportState, event: ExportEvent) -> ExportState:
    try:
        return TRANSITIONS[(ExportState(state), ExportEvent(event))]
    except KeyError:
        raise IllegalTransition(ExportState(state), ExportEvent(event)) from None


def allowed_events(state: ExportState) -> frozenset[ExportEvent]:
    return frozenset(event for (from_state, event) in TRANSITIONS if from_state is state)


def retry_delay(attempt: int, *, base_s: float = 5.0, cap_s: float = 900.0) -> float:
    """Seconds before retry number `attempt` (1, 2, …) of a step that failed: doubling from
    `base_s`, capped at `cap_s` (a regulator endpoint down for hours is retried every 15 min)."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, not {attempt}")
    return min(base_s * 2 ** min(attempt - 1, 32), cap_s)
