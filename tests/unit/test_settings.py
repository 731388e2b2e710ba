import json

import pytest

from cdr_mediation.settings import Settings, SettingsError, StartupRefused, check_worker_startup


def test_defaults_are_a_valid_dev_configuration():
    settings = Settings.load({})
    assert settings.environment == "dev"
    assert settings.export_enabled and settings.adjustment_enabled
    assert not settings.chain_verify_fail_fast and not settings.ai_enabled


def test_values_come_from_cdr_prefixed_environment_variables():
    settings = Settings.load({"CDR_PARTITIONS": "12", "CDR_EXPORT_ENABLED": "false", "CDR_KAFKA_BOOTSTRAP": "k:9093"})
    assert (settings.partitions, settings.export_enabled, settings.kafka_bootstrap) == (12, False, "k:9093")


def test_settings_are_frozen():
    settings = Settings.load({})
    with pytest.raises(Exception):
        settings.partitions = 3  # type: ignore[misc]


def test_unknown_cdr_variable_is_refused_by_name():
    # A typo in a rollback flag must not be silently ignored.
    with pytest.raises(SettingsError, match="CDR_EXPORT_ENABLE'"):
        Settings.load({"CDR_EXPORT_ENABLE": "false"})


def test_invalid_value_names_the_variable():
    with pytest.raises(SettingsError, match="CDR_PARTITIONS"):
        Settings.load({"CDR_PARTITIONS": "zero"})


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        Settings.load({"CDR_PARTITIONS": "0", "CDR_SFTP_PORT": "70000"})
    assert "CDR_PARTITIONS" in str(caught.value) and "CDR_SFTP_PORT" in str(caught.value)


def test_masked_settings_hide_every_secret():
    secrets = {
        "CDR_PG_DSN": "postgresql://cdr_app:pg-secret-123@db/cdr",
        "CDR_HSM_PIN": "hsm-pin-456",
        "CDR_S3_SECRET_KEY": "s3-secret-789",
        "CDR_MSISDN_HASH_KEY": "k" * 40,
        "CDR_HTTPS_CLIENT_KEY_PASSPHRASE": "tls-key-passphrase-012",
    }
    rendered = json.dumps(Settings.load(secrets).masked())
    for value in secrets.values():
        assert value not in rendered
    assert json.loads(rendered)["hsm_pin"] == "***"


def test_secrets_do_not_leak_through_repr():
    settings = Settings.load({"CDR_HSM_PIN": "hsm-pin-456", "CDR_HTTPS_CLIENT_KEY_PASSPHRASE": "tls-key-012"})
    assert "hsm-pin-456" not in repr(settings) and "tls-key-012" not in repr(settings)


def test_prod_requires_an_msisdn_hash_key():
    with pytest.raises(SettingsError, match="CDR_MSISDN_HASH_KEY"):
        Settings.load({"CDR_ENVIRONMENT": "prod"})
    assert Settings.load({"CDR_ENVIRONMENT": "prod", "CDR_MSISDN_HASH_KEY": "x" * 32}).environment == "prod"


@pytest.mark.parametrize("variable", ["AI_ENABLED", "CDR_AI_ENABLED"])
def test_worker_refuses_ai_without_a_model_registry_entry(variable):
    settings = Settings.load({variable: "true"})
    with pytest.raises(StartupRefused, match="no model registry entry"):
        check_worker_startup(settings)


def test_worker_starts_with_ai_when_a_registry_entry_is_configured():
    settings = Settings.load({"AI_ENABLED": "true", "CDR_AI_MODEL_REGISTRY_ENTRY": "export-anomaly@1.0",
                              "CDR_PRICING_FILE": "pricing.json"})
    check_worker_startup(settings)
    assert settings.ai_enabled


def test_worker_starts_with_ai_disabled():
    check_worker_startup(Settings.load({"AI_ENABLED": "false", "CDR_PRICING_FILE": "pricing.json"}))


def test_an_ingest_worker_refuses_to_start_without_a_pricing_snapshot():
    with pytest.raises(StartupRefused, match="CDR_PRICING_FILE"):
        check_worker_startup(Settings.load({}))
    check_worker_startup(Settings.load({"CDR_WORKER_AGENTS": "store,rollup"}))


def test_store_and_rollup_agents_refuse_to_run_apart():
    # Both read the CDR topic in one consumer group: apart, each would see only some partitions.
    for agents in ("store", "rollup", "ingest,rollup-store,store"):
        with pytest.raises(StartupRefused, match="same workers"):
            check_worker_startup(Settings.load({"CDR_WORKER_AGENTS": agents, "CDR_PRICING_FILE": "p.json"}))
    check_worker_startup(Settings.load({"CDR_WORKER_AGENTS": "rollup,store,rollup-store"}))
    # Alone in its group (a benchmark), nobody else can be assigned the partitions it lacks.
    check_worker_startup(Settings.load({"CDR_WORKER_AGENTS": "rollup", "CDR_WORKER_SOLO": "true"}))


def test_worker_agents_are_validated():
    assert Settings.load({"CDR_WORKER_AGENTS": "store,ingest"}).agents == {"ingest", "store"}
    assert Settings.load({}).agents == {"ingest", "store", "rollup", "rollup-store"}
    with pytest.raises(SettingsError, match="CDR_WORKER_AGENTS"):
        Settings.load({"CDR_WORKER_AGENTS": "ingest,exporter2"})


def test_both_ai_flag_spellings_must_agree():
    with pytest.raises(SettingsError, match="disagrees"):
        Settings.load({"AI_ENABLED": "true", "CDR_AI_ENABLED": "false"})


def test_an_exporter_refuses_to_start_without_its_configuration_and_certificates(tmp_path):
    base = {"CDR_WORKER_AGENTS": "exporter"}
    with pytest.raises(StartupRefused, match="CDR_EXPORT_CONFIG_FILE, CDR_HSM_CA_CERT, CDR_HSM_CERT_ED25519"):
        check_worker_startup(Settings.load(base))
    with pytest.raises(StartupRefused, match="CDR_HSM_CERT_ECDSA_P256"):
        check_worker_startup(Settings.load({**base, "CDR_EXPORT_SIGNATURE_PROFILE": "ecdsa-p256",
                                            "CDR_EXPORT_CONFIG_FILE": str(tmp_path), "CDR_HSM_CA_CERT": str(tmp_path)}))
    check_worker_startup(Settings.load({**base, "CDR_EXPORT_ENABLED": "false"}))  # disabled: nothing needed
    with pytest.raises(SettingsError):
        Settings.load({"CDR_EXPORT_SIGNATURE_PROFILE": "rsa"})


def test_delivery_goes_over_sftp_unless_https_is_chosen():
    assert Settings.load({}).delivery_method == "sftp"
    settings = Settings.load({"CDR_DELIVERY_METHOD": "https", "CDR_HTTPS_URL": "https://regulator.example:8443",
                              "CDR_HTTPS_CA_CERT": "ca.pem", "CDR_HTTPS_CLIENT_CERT": "client.pem",
                              "CDR_HTTPS_CLIENT_KEY": "client.key"})
    assert (settings.delivery_method, settings.https_url) == ("https", "https://regulator.example:8443")
    assert settings.masked()["https_client_key"] == "client.key"  # a path, not a secret
    with pytest.raises(SettingsError, match="CDR_DELIVERY_METHOD"):
        Settings.load({"CDR_DELIVERY_METHOD": "ftp"})


@pytest.mark.parametrize("url", ["http://regulator.example", "regulator.example:8443", "https://", "https://a b"])
def test_the_https_delivery_url_must_be_an_https_url(url):
    # Exports never travel in clear, not even by a typo.
    with pytest.raises(SettingsError, match="CDR_HTTPS_URL"):
        Settings.load({"CDR_HTTPS_URL": url})


def test_an_exporter_refuses_to_start_without_the_settings_of_its_delivery_channel(tmp_path):
    exporter = {"CDR_WORKER_AGENTS": "exporter", "CDR_EXPORT_CONFIG_FILE": str(tmp_path),
                "CDR_HSM_CA_CERT": str(tmp_path), "CDR_HSM_CERT_ED25519": str(tmp_path)}
    with pytest.raises(StartupRefused, match="the exporter needs CDR_SFTP_KEY_PATH, CDR_SFTP_KNOWN_HOSTS"):
        check_worker_startup(Settings.load(exporter))
    sftp = {"CDR_SFTP_KEY_PATH": str(tmp_path), "CDR_SFTP_KNOWN_HOSTS": str(tmp_path)}
    check_worker_startup(Settings.load({**exporter, **sftp}))
    https = {**exporter, **sftp, "CDR_DELIVERY_METHOD": "https"}  # SFTP settings do not stand in for HTTPS ones
    with pytest.raises(StartupRefused, match="CDR_HTTPS_URL, CDR_HTTPS_CA_CERT, CDR_HTTPS_CLIENT_CERT, "
                                             "CDR_HTTPS_CLIENT_KEY"):
        check_worker_startup(Settings.load(https))
    check_worker_startup(Settings.load({**https, "CDR_HTTPS_URL": "https://127.0.0.1:8443",
                                        "CDR_HTTPS_CA_CERT": "ca.pem", "CDR_HTTPS_CLIENT_CERT": "client.pem",
                                        "CDR_HTTPS_CLIENT_KEY": "client.key"}))


def test_the_verification_runs_daily_unless_told_otherwise():
    assert Settings.load({}).chain_verify_interval_s == 86400
    settings = Settings.load({"CDR_CHAIN_VERIFY_INTERVAL_S": "3600", "CDR_CHAIN_VERIFY_FAIL_FAST": "true"})
    assert (settings.chain_verify_interval_s, settings.chain_verify_fail_fast) == (3600, True)
    with pytest.raises(SettingsError, match="CDR_CHAIN_VERIFY_INTERVAL_S"):
        Settings.load({"CDR_CHAIN_VERIFY_INTERVAL_S": "0"})
