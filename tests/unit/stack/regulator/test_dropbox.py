"""Which files in the drop box's inbox are new deliveries over SFTP."""

from __future__ import annotations

from cdr_mediation.infra.delivery.files import temporary_name
from cdr_mediation.stack.regulator.dropbox import new_arrivals


def test_only_complete_unknown_files_are_arrivals_in_name_order(tmp_path):
    for name in ("b.zip", "a.zip", "known.zip", temporary_name("c.zip", "c" * 64), ".https-1234.part"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "subdir").mkdir()
    assert new_arrivals(tmp_path, lambda name: name == "known.zip") == ["a.zip", "b.zip"]
