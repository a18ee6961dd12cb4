"""Settings come from INTEROCC_* environment variables, validated once at start-up.

A bad value raises ConfigError naming the setting; the CLI turns it into one line on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from server.config import DEFAULT_DATABASE_URL, VERSION, ConfigError, Settings, load_settings

SECRET = "s" * 32
ROOT = Path(__file__).resolve().parent.parent


def env(**values: str) -> dict[str, str]:
    return {"INTEROCC_SECRET_KEY": SECRET, **values}


def test_defaults() -> None:
    settings = load_settings(env())
    assert settings == Settings(
        base_url="http://127.0.0.1:8000",
        database_url=DEFAULT_DATABASE_URL,
        secret_key=SECRET,
    )
    assert settings.database_url == "sqlite+aiosqlite:///data/interocc.sqlite3"
    assert settings.allow_private_addresses is False
    assert settings.signature_window == timedelta(hours=1)
    assert settings.max_body_bytes == 1_000_000
    assert settings.fetch_timeout == 10.0
    assert settings.fetch_max_bytes == 2_000_000
    assert settings.delivery_timeout == 20.0
    assert settings.delivery_concurrency == 32
    assert settings.delivery_max_attempts == 16
    assert settings.instance_name == "InterOcc"
    assert settings.log_level == "INFO"


def test_load_settings_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEROCC_BASE_URL", "ftp://from-the-process-environment")
    assert load_settings(env()).base_url == "http://127.0.0.1:8000"


def test_every_setting_is_read() -> None:
    settings = load_settings(
        env(
            INTEROCC_BASE_URL="https://Occupy.Example:8443/",
            INTEROCC_DATABASE_URL="postgresql+asyncpg://ga@db/interocc",
            INTEROCC_ALLOW_PRIVATE_ADDRESSES="yes",
            INTEROCC_SIGNATURE_WINDOW_SECONDS="300",
            INTEROCC_MAX_BODY_BYTES="20000",
            INTEROCC_FETCH_TIMEOUT="2.5",
            INTEROCC_FETCH_MAX_BYTES="50000",
            INTEROCC_DELIVERY_TIMEOUT="7",
            INTEROCC_DELIVERY_CONCURRENCY="3",
            INTEROCC_DELIVERY_MAX_ATTEMPTS="4",
            INTEROCC_INSTANCE_NAME="  Liberty Square  ",
            INTEROCC_LOG_LEVEL="debug",
        )
    )
    assert settings == Settings(
        base_url="https://occupy.example:8443",
        database_url="postgresql+asyncpg://ga@db/interocc",
        secret_key=SECRET,
        allow_private_addresses=True,
        signature_window=timedelta(seconds=300),
        max_body_bytes=20_000,
        fetch_timeout=2.5,
        fetch_max_bytes=50_000,
        delivery_timeout=7.0,
        delivery_concurrency=3,
        delivery_max_attempts=4,
        instance_name="Liberty Square",
        log_level="DEBUG",
    )
    assert settings.host == "occupy.example:8443"
    assert settings.https is True


def test_base_url_drops_a_trailing_slash_and_lowercases_the_host() -> None:
    assert load_settings(env(INTEROCC_BASE_URL="HTTPS://GA.Example/")).base_url == (
        "https://ga.example"
    )
    settings = load_settings(env(INTEROCC_BASE_URL="http://ga.example/"))
    assert settings.base_url == "http://ga.example"
    assert settings.https is False
    assert settings.host == "ga.example"


def test_user_agent_names_interocc_its_version_and_the_instance() -> None:
    settings = load_settings(env(INTEROCC_BASE_URL="https://occupy.example"))
    assert settings.user_agent == f"InterOcc/{VERSION} (+https://occupy.example/)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://ga:pw@db:5432/interocc", "postgresql+asyncpg://ga:pw@db:5432/interocc"),
        ("postgresql://ga@db/interocc", "postgresql+asyncpg://ga@db/interocc"),
        ("postgresql+asyncpg://ga@db/interocc", "postgresql+asyncpg://ga@db/interocc"),
        ("sqlite:///data/x.sqlite3", "sqlite+aiosqlite:///data/x.sqlite3"),
        (
            "sqlite:////var/lib/interocc/x.sqlite3",
            "sqlite+aiosqlite:////var/lib/interocc/x.sqlite3",
        ),
        ("sqlite+aiosqlite:///x.sqlite3", "sqlite+aiosqlite:///x.sqlite3"),
    ],
)
def test_database_urls_are_rewritten_to_the_async_drivers(raw: str, expected: str) -> None:
    assert load_settings(env(INTEROCC_DATABASE_URL=raw)).database_url == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INTEROCC_BASE_URL", "ftp://x"),
        ("INTEROCC_BASE_URL", "https://x/path"),
        ("INTEROCC_BASE_URL", "https://x/?q=1"),
        ("INTEROCC_BASE_URL", "https://x/#top"),
        ("INTEROCC_BASE_URL", "occupy.example"),
        ("INTEROCC_BASE_URL", "https://"),
        ("INTEROCC_BASE_URL", "https://x:99999"),
        ("INTEROCC_DATABASE_URL", "mysql://ga@db/interocc"),
        ("INTEROCC_DATABASE_URL", "sqlite://relative"),
        ("INTEROCC_DATABASE_URL", ""),
        ("INTEROCC_ALLOW_PRIVATE_ADDRESSES", "maybe"),
        ("INTEROCC_SIGNATURE_WINDOW_SECONDS", "abc"),
        ("INTEROCC_SIGNATURE_WINDOW_SECONDS", "5"),
        ("INTEROCC_SIGNATURE_WINDOW_SECONDS", "1000000"),
        ("INTEROCC_MAX_BODY_BYTES", "1"),
        ("INTEROCC_MAX_BODY_BYTES", "1.5e6"),
        ("INTEROCC_FETCH_TIMEOUT", "fast"),
        ("INTEROCC_FETCH_TIMEOUT", "0"),
        ("INTEROCC_FETCH_MAX_BYTES", "10"),
        ("INTEROCC_DELIVERY_TIMEOUT", "-1"),
        ("INTEROCC_DELIVERY_CONCURRENCY", "0"),
        ("INTEROCC_DELIVERY_MAX_ATTEMPTS", "1000"),
        ("INTEROCC_LOG_LEVEL", "chatty"),
    ],
)
def test_a_bad_value_raises_config_error_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env(**{name: value}))
    assert name in str(caught.value)


@pytest.mark.parametrize("secret", [None, "", "short", "x" * 31])
def test_a_missing_or_short_secret_key_is_refused(secret: str | None) -> None:
    values = {} if secret is None else {"INTEROCC_SECRET_KEY": secret}
    with pytest.raises(ConfigError) as caught:
        load_settings(values)
    assert "INTEROCC_SECRET_KEY" in str(caught.value)


def test_a_32_character_secret_key_is_enough() -> None:
    assert load_settings({"INTEROCC_SECRET_KEY": "x" * 32}).secret_key == "x" * 32


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
def test_allow_private_addresses_true_spellings(raw: str) -> None:
    assert load_settings(env(INTEROCC_ALLOW_PRIVATE_ADDRESSES=raw)).allow_private_addresses


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_allow_private_addresses_false_spellings(raw: str) -> None:
    assert not load_settings(env(INTEROCC_ALLOW_PRIVATE_ADDRESSES=raw)).allow_private_addresses


def test_numeric_bounds_are_inclusive() -> None:
    low = load_settings(
        env(INTEROCC_SIGNATURE_WINDOW_SECONDS="30", INTEROCC_MAX_BODY_BYTES="10000")
    )
    assert low.signature_window == timedelta(seconds=30)
    assert low.max_body_bytes == 10_000
    high = load_settings(env(INTEROCC_SIGNATURE_WINDOW_SECONDS="86400"))
    assert high.signature_window == timedelta(days=1)


# ---- the CLI stops with one line ---------------------------------------------------------


def run_cli(*args: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    interocc = Path(sys.executable).parent / "interocc"
    base = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    return subprocess.run(
        [str(interocc), *args],
        env={**base, **extra_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_stops_with_one_line_naming_a_bad_setting(tmp_path: Path) -> None:
    result = run_cli(
        "assembly",
        "list",
        extra_env={
            "INTEROCC_BASE_URL": "ftp://occupy.example",
            "INTEROCC_SECRET_KEY": SECRET,
            "INTEROCC_DATABASE_URL": f"sqlite:///{tmp_path}/never-created.sqlite3",
        },
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "INTEROCC_BASE_URL" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "never-created.sqlite3").exists()


def test_cli_names_a_missing_secret_key() -> None:
    result = run_cli("assembly", "list", extra_env={})
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "INTEROCC_SECRET_KEY" in lines[0]
