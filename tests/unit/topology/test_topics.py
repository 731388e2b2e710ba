from cdr_mediation.topology.topics import (
    CDR,
    DLR,
    PRICING_SNAPSHOT,
    SOURCE_TOPICS,
    Cleanup,
    TableSpec,
    all_topics,
)


def test_topic_names_are_unique_and_versioned():
    names = [spec.name for spec in SOURCE_TOPICS]
    assert len(names) == len(set(names))
    assert all(name.rsplit(".", 1)[-1].startswith("v") for name in names)


def test_keyed_topics_share_one_partition_count_so_operators_stay_colocated():
    keyed = [spec for spec in SOURCE_TOPICS if spec.key.startswith("operator_id")]
    assert {DLR, CDR} <= set(keyed)
    assert {spec.partitions(12) for spec in keyed} == {12}


def test_pricing_snapshots_are_one_compacted_partition():
    assert PRICING_SNAPSHOT.partitions(12) == 1
    assert PRICING_SNAPSHOT.config() == {"cleanup.policy": "compact"}


def test_source_topics_are_replayable_for_weeks():
    assert DLR.config()["cleanup.policy"] == "delete"
    assert int(DLR.config()["retention.ms"]) >= 30 * 24 * 3600 * 1000


def test_table_changelogs_are_compacted_and_partitioned_like_the_source():
    table = TableSpec("ingest-state", key="operator_id", value="chain head")
    changelog = table.changelog("cdr-mediation")
    assert changelog.name == "cdr-mediation-ingest-state-changelog"
    assert changelog.cleanup is Cleanup.COMPACT and changelog.retention_ms is None
    assert changelog.partitions(8) == DLR.partitions(8)
    assert changelog in all_topics("cdr-mediation", (table,))


def test_a_prefix_namespaces_source_topics_but_not_faust_changelogs():
    table = TableSpec("ingest-state", key="operator_id", value="chain head")
    names = {spec.name for spec in all_topics("cdr-mediation", (table,), prefix="staging.")}
    assert "staging.dlr.v1" in names and "dlr.v1" not in names
    # Faust names changelogs after the app id; a prefixed name would never be written.
    assert "cdr-mediation-ingest-state-changelog" in names
