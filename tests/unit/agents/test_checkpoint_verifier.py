"""The signature half of checkpoint verification (agents/checkpoint_verifier.signature_problem):
a SIGNED step proves its checkpoint only with a CMS whose signer chains to the trust anchor, made
at the cut-off for the ZIP that was built, and a checkpoint signature of that signer's key over
the recorded checkpoint — checked with software keys standing in for the HSM (the real token:
tests/integration/test_verifier.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cdr_mediation.agents.checkpoint_verifier import signature_problem
from cdr_mediation.domain.checkpoint import Checkpoint, CheckpointBuilder
from cdr_mediation.domain.export_config import day_cut_off
from cdr_mediation.domain.verification import FileGeneration
from cdr_mediation.infra.cms import sign_checkpoint, sign_detached
from cdr_mediation.infra.hsm import SignatureProfile
from cdr_mediation.stack.hsm import dev_root_ca
from tests.unit.infra.conftest import make_dev_chain

DAY = "2026-11-03"
ZIP = b"PK\x03\x04 the export zip"


@pytest.fixture(scope="module")
def chain():
    return make_dev_chain()


def _checkpoint() -> dict:
    builder = CheckpointBuilder("op-a", DAY)
    builder.add({"chain_seq": 1, "operator_id": "op-a", "currency": "EUR", "record_type": "CDR", "status": "DELIVERED",
                 "billable": True, "segments": 1, "amount_minor": 5, "tax_minor": 1}, "a" * 64)
    return builder.finish(file_name="CDAFGAWATRAA00001", file_sequence=1, cut_off="2026-11-04T00:00:00.000Z",
                          data_sha256="c" * 64).to_dict()


def _generation(chain, profile: SignatureProfile, *, signed_checkpoint: dict | None = None, signing_time=None,
                zip_bytes: bytes = ZIP) -> FileGeneration:
    """A generation as the exporter records it: `_checkpoint()` built, the ZIP and a checkpoint
    (`signed_checkpoint`, by default the one built) signed."""
    checkpoint = signed_checkpoint or _checkpoint()
    identity = chain.identities[profile]
    cms = sign_detached(zip_bytes, identity=identity, signer=chain.signer,
                        signing_time=signing_time or day_cut_off(DAY))
    signature = sign_checkpoint(Checkpoint.from_dict(checkpoint).canonical_bytes(), identity=identity,
                                signer=chain.signer)
    zip_sha256 = hashlib.sha256(ZIP).hexdigest()
    signed = {"profile": profile.value, "zip_sha256": zip_sha256, "cms_base64": base64.b64encode(cms).decode(),
              "checkpoint_key_id": signature.key_id, "checkpoint_signature": signature.signature.hex()}
    return FileGeneration(1, zip_sha256, _checkpoint(), signed)


@pytest.mark.parametrize("profile", list(SignatureProfile), ids=lambda p: p.value)
def test_a_checkpoint_signed_as_the_exporter_signs_it_verifies(chain, profile):
    assert signature_problem(_generation(chain, profile), DAY, [chain.ca_cert]) is None


@pytest.mark.parametrize("profile", list(SignatureProfile), ids=lambda p: p.value)
def test_a_recorded_checkpoint_other_than_the_signed_one_is_found(chain, profile):
    signed_other = {**_checkpoint(), "record_count": 2}
    problem = signature_problem(_generation(chain, profile, signed_checkpoint=signed_other), DAY, [chain.ca_cert])
    assert problem == "checkpoint signature does not verify"


def test_a_signer_the_trust_anchor_does_not_vouch_for_is_found(chain):
    other_root = dev_root_ca(ec.generate_private_key(ec.SECP256R1()))
    problem = signature_problem(_generation(chain, SignatureProfile.ED25519), DAY, [other_root])
    assert problem is not None and "no certification path" in problem


def test_a_signature_made_at_another_time_than_the_cut_off_is_found(chain):
    generation = _generation(chain, SignatureProfile.ED25519, signing_time=day_cut_off("2026-11-04"))
    assert "is not the cut-off" in signature_problem(generation, DAY, [chain.ca_cert])


def test_an_ecdsa_cms_over_other_bytes_than_the_built_zip_is_found(chain):
    generation = _generation(chain, SignatureProfile.ECDSA_P256, zip_bytes=b"other bytes")
    problem = signature_problem(generation, DAY, [chain.ca_cert])
    assert problem == "the CMS signs other bytes than the ZIP that was built"


def test_a_signing_of_another_zip_is_found(chain):
    generation = _generation(chain, SignatureProfile.ED25519)
    generation = FileGeneration(1, "f" * 64, generation.checkpoint, generation.signed)
    assert "the build recorded" in signature_problem(generation, DAY, [chain.ca_cert])


def test_unreadable_evidence_is_a_problem_not_a_crash(chain):
    generation = _generation(chain, SignatureProfile.ED25519)
    broken = FileGeneration(1, generation.zip_sha256, generation.checkpoint,
                            {**generation.signed, "cms_base64": "not base64!"})
    assert "unreadable" in signature_problem(broken, DAY, [chain.ca_cert])
    missing = FileGeneration(1, generation.zip_sha256, generation.checkpoint,
                             {k: v for k, v in generation.signed.items() if k != "checkpoint_signature"})
    assert "unreadable" in signature_problem(missing, DAY, [chain.ca_cert])


async def test_a_file_whose_earlier_files_are_unknown_is_a_mismatch_not_a_crash(chain):
    """Which late entries and adjustments a file carries depends on the files before it
    (domain/file_scope.py); without them the content cannot be recomputed, and the run reports
    that file instead of failing as a whole."""
    from cdr_mediation.agents.checkpoint_verifier import verify_export
    from cdr_mediation.domain.verification import CheckpointStatus
    from cdr_mediation.infra.postgres.verification_store import ExportEvidence

    class NoEarlierFiles:  # the one query the scope needs: the operator's earlier files
        async def fetch(self, sql, *args):
            assert "FROM export_file" in sql
            return []

    closed = {"operator_id": "op-a", "day": DAY, "closed_by": "event", "chain_head_seq": 9,
              "chain_head_hash": "b" * 64, "watermark": "2026-11-04T02:00:00.000Z", "day_sequence": 5}
    export = ExportEvidence("op-a", DAY, "CDAFGAWATRAA00005", closed,
                            [(1, "built", {"zip_sha256": "c" * 64, "checkpoint": _checkpoint()})])
    verdict = await verify_export(NoEarlierFiles(), export, [chain.ca_cert], cold_through_seq=0)
    assert verdict.status is CheckpointStatus.MISMATCH
    assert "earlier closes [1, 2, 3, 4] are unknown" in verdict.detail
