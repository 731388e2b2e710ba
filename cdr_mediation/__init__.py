"""cdr-mediation: SMS delivery receipts to regulator-grade, hash-chained call detail records."""

__version__ = "0.1.0"
