"""Real servers on 127.0.0.1 for development and tests: NATS JetStream, Kafka (Tansu), PostgreSQL,
a SoftHSM2 token, an SFTP drop box (OpenSSH), S3 with object lock (moto) and a regulator
simulator (HTTPS with mutual TLS, answering deliveries as a test commands)."""

from cdr_mediation.stack.manager import Stack
from cdr_mediation.stack.process import StackError

__all__ = ["Stack", "StackError"]
