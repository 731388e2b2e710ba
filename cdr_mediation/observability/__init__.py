"""Structured JSON logs with MSISDN redaction, and a Prometheus endpoint per process."""
