"""The archive keys of an export: one prefix per delivered generation, a kind for every key."""

from __future__ import annotations

import pytest

from cdr_mediation.domain.export_archive import ArchivedKind, answer_key, delivered_keys, generation_prefix, kind_of

SHA = "0123456789abcdef" * 4
NAME = "TDAFGAWATRAA00001"


def test_a_delivered_generation_is_four_objects_under_the_zips_digest():
    keys = delivered_keys("op-a", "2026-10-20", SHA, NAME)
    prefix = f"exports/op-a/2026-10-20/{SHA}/"
    assert keys == {ArchivedKind.ZIP: f"{prefix}{NAME}.zip", ArchivedKind.SIGNATURE: f"{prefix}{NAME}.zip.p7s",
                    ArchivedKind.CHECKPOINT: f"{prefix}{NAME}.checkpoint.json",
                    ArchivedKind.CHECKPOINT_SIGNATURE: f"{prefix}{NAME}.checkpoint.sig"}


def test_a_corrected_file_is_archived_beside_the_rejected_one_never_over_it():
    rejected = delivered_keys("op-a", "2026-10-20", SHA, NAME)
    corrected = delivered_keys("op-a", "2026-10-20", "f" * 64, NAME)
    assert not set(rejected.values()) & set(corrected.values())


def test_every_key_says_what_it_holds():
    for kind, key in delivered_keys("op-a", "2026-10-20", SHA, NAME).items():
        assert kind_of(key, NAME) is kind
    assert kind_of(answer_key("op-a", "2026-10-20", SHA, f"{NAME}.zip.rap"), NAME) is ArchivedKind.ANSWER
    with pytest.raises(ValueError):
        kind_of(f"exports/op-a/2026-10-20/{SHA}/OTHER.zip", NAME)


@pytest.mark.parametrize("digest", ["", "A" * 64, "0" * 63, "g" * 64])
def test_only_a_lowercase_sha256_names_a_generation(digest):
    with pytest.raises(ValueError):
        generation_prefix("op-a", "2026-10-20", digest)
