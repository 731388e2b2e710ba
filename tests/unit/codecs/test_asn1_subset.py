"""The ASN.1 shipped in the package is the reference ASN.1, type by type."""

from __future__ import annotations

import re
from pathlib import Path

import asn1tools
import pytest

import cdr_mediation.codecs as codecs_package
from cdr_mediation.codecs import asn1
from .codec_factories import shared_dir

REFERENCE = shared_dir() / "spec" / "asn1"


def _reference_types() -> dict[str, dict]:
    parsed = asn1tools.parse_files([str(REFERENCE / "TAP-0312.asn"), str(REFERENCE / "RAP-0105.asn")])
    return {name: module["types"] for name, module in parsed.items()}


def test_every_shipped_tap_type_is_the_reference_definition():
    reference = _reference_types()["TAP-0312"]
    shipped = asn1.parsed_types()["TAP-0312"]
    assert len(shipped) == 128
    for name, definition in shipped.items():
        if name == "CallEventDetail":
            continue
        assert definition == reference[name], name


def test_call_event_detail_is_the_reference_choice_reduced_to_service_centre_usage():
    reference = _reference_types()["TAP-0312"]["CallEventDetail"]
    shipped = asn1.parsed_types()["TAP-0312"]["CallEventDetail"]
    kept = [m for m in reference["members"] if m is None or m["name"] == "serviceCentreUsage"]
    assert shipped == {**reference, "members": kept}


def test_shipped_rap_module_is_the_complete_reference_module():
    assert asn1.parsed_types()["RAP-0105"] == _reference_types()["RAP-0105"]


def test_every_type_rap_imports_is_in_the_shipped_tap_subset():
    imports = asn1tools.parse_files([str(REFERENCE / "RAP-0105.asn")])["RAP-0105"]["imports"]["TAP-0312"]
    assert set(imports) <= set(asn1.parsed_types()["TAP-0312"])


def _mandatory_in(text: str) -> set[tuple[str, str]]:
    pairs, current = set(), None
    for line in text.splitlines():
        start = re.match(r"^([A-Za-z][\w-]*) ::=", line)
        if start:
            current = start.group(1)
        member = re.match(r"^\s+(\w+)\s+\S+.*--\s*\*m\.m\.", line)
        if member and current:
            pairs.add((current, member.group(1)))
    return pairs


def test_mandatory_notes_are_those_of_the_reference_for_the_shipped_types():
    shipped_types = set(asn1.parsed_types()["TAP-0312"])
    reference = {
        pair for pair in _mandatory_in((REFERENCE / "TAP-0312.asn").read_text()) if pair[0] in shipped_types
    }
    assert asn1.tap_mandatory_members() == reference
    assert ("ScuBasicInformation", "chargeableSubscriber") in reference
    assert ("AuditControlInfo", "totalCharge") in reference
    assert ("DateTime", "utcTimeOffsetCode") in reference


@pytest.mark.parametrize("path", sorted(Path(codecs_package.__file__).parent.rglob("*.py")), ids=lambda p: p.name)
def test_production_code_does_not_read_the_shared_reference(path: Path):
    text = path.read_text()
    assert "CDR_SHARED_DIR" not in text
    assert "spec/asn1" not in text.replace("(spec/asn1, not shipped)", "")
    assert "../shared" not in text
