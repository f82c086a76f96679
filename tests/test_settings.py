"""Settings: validated at start, bad variables named; .env.example lists every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest.settings import Settings, SettingsError, load_settings


def test_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_SIZE", "lots")
    monkeypatch.setenv("EMBEDDING_BACKEND", "word2vec")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CHUNK_SIZE" in str(info.value)
    assert "EMBEDDING_BACKEND" in str(info.value)


def test_inconsistent_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_SIZE", "200")
    monkeypatch.setenv("CHUNK_OVERLAP", "300")
    with pytest.raises(SettingsError, match="CHUNK_OVERLAP"):
        load_settings()


@pytest.mark.parametrize("template", ["tenants/{tenant}/", "companies/{0}/"])
def test_a_key_prefix_template_with_unknown_fields_is_refused(
    monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    monkeypatch.setenv("S3_KEY_PREFIX_TEMPLATE", template)
    with pytest.raises(SettingsError, match="S3_KEY_PREFIX_TEMPLATE"):
        load_settings()


def test_a_batch_file_timeout_shorter_than_recovery_is_refused(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_FILE_TIMEOUT_MINUTES", "60")  # the first slice's default
    with pytest.raises(SettingsError, match="BATCH_FILE_TIMEOUT_MINUTES must be at least 63"):
        load_settings()


def test_non_postgres_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings()


def test_fractional_minutes_and_blank_optionals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_NOTIFICATION_DELAY_MINUTES", "0.05")
    monkeypatch.setenv("CHROMA_HOST", "  ")
    settings = load_settings()
    assert settings.default_notification_delay_minutes == 0.05
    assert settings.chroma_host is None


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} <= listed
