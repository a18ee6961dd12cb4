"""Settings read from the environment and validated once at start-up.

Every setting is named ``INTEROCC_*``. A bad value raises :class:`ConfigError` whose message
names the setting, so the CLI can stop with one clear line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["ConfigError", "Settings", "SmtpServer", "load_settings", "parse_smtp_url"]

VERSION = "0.1.0"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/interocc.sqlite3"
DEFAULT_MEDIA_DIR = "data/media"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class SmtpServer:
    """Where the worker sends mail (``INTEROCC_SMTP_URL``, parsed).

    ``tls`` is "starttls" (smtp://, the submission port 587: the connection must be
    upgraded before anything else is said, so credentials never travel in the clear),
    "implicit" (smtps://, port 465) or "none" (smtp+plain://, port 25: a relay on this
    machine or a private network; refused with credentials unless the host is loopback).
    """

    host: str
    port: int
    tls: str
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the password in a log line or a traceback
        user = f"{self.username}@" if self.username else ""
        return f"SmtpServer({self.tls}://{user}{self.host}:{self.port})"


@dataclass(frozen=True)
class Settings:
    base_url: str
    database_url: str
    secret_key: str
    allow_private_addresses: bool = False
    signature_window: timedelta = timedelta(hours=1)
    max_body_bytes: int = 1_000_000
    fetch_timeout: float = 10.0
    fetch_max_bytes: int = 2_000_000
    delivery_timeout: float = 20.0
    # Delivery (server/worker.py, server/activitypub/hosts.py): the connect phase's own
    # short timeout; the slots a worker keeps busy; the requests one host may have in
    # flight across every worker; after how long an unanswered request moves aside (freeing
    # its slot) and how many may wait aside at once.
    delivery_connect_timeout: float = 5.0
    delivery_concurrency: int = 32
    delivery_max_attempts: int = 16
    delivery_per_host: int = 2
    delivery_slow_seconds: float = 1.0
    delivery_slow_max: int = 128
    # Host health: consecutive failures before a host's deliveries are held; the probe
    # backoff (doubling from the first to the most); failing this long, a host is
    # unavailable; held deliveries released per minute once it answers again.
    host_failure_threshold: int = 5
    host_probe_first: timedelta = timedelta(minutes=1)
    host_probe_most: timedelta = timedelta(hours=6)
    host_unavailable_after: timedelta = timedelta(days=7)
    host_release_per_minute: int = 120
    instance_name: str = "InterOcc"
    log_level: str = "INFO"
    media_dir: Path = Path(DEFAULT_MEDIA_DIR)
    max_upload_bytes: int = 8_000_000
    session_lifetime: timedelta = timedelta(days=30)
    # Mastodon's "secure mode": actor-scoped ActivityStreams documents only for signed GETs.
    authorized_fetch: bool = False
    # Inbox rate limits (per process, per minute; see docs/security.md).
    inbox_per_actor: int = 300
    inbox_per_host: int = 3_000
    key_fetches_per_host: int = 60
    key_failure_ttl: timedelta = timedelta(minutes=5)
    # How long a federation GET answer is kept in a web process (server/federation/cache.py):
    # changes made in the process drop it at once, changes made by other processes are seen
    # after at most this long. 0 keeps nothing.
    read_cache_seconds: int = 5
    # The inbox queue (accept fast, process later): attempts before an activity is parked,
    # how many a worker processes at once, and how long a claim lasts before another worker
    # may take the activity over (a worker killed mid-way loses its claims after this).
    inbox_max_attempts: int = 5
    inbox_concurrency: int = 8
    inbox_lease: timedelta = timedelta(seconds=60)
    # Scheduled exports (server/exports.py): where the worker keeps assemblies' archives
    # (None: ``exports`` beside the media folder, see :attr:`exports_root`) and how long it
    # waits between two exports of one assembly.
    exports_dir: Path | None = None
    export_interval: timedelta = timedelta(hours=24)
    # Mail (server/mail.py): the SMTP server the worker sends through (an smtp://,
    # smtps:// or smtp+plain:// URL, credentials in it) and the From address. Both empty:
    # the instance sends no mail (invitation links are passed on by hand, no password
    # reset by mail). A CA file to trust instead of the system's (a private relay's
    # self-signed certificate), and how long one SMTP exchange may take.
    smtp_url: str = field(default="", repr=False)  # holds the SMTP password
    mail_from: str = ""
    smtp_ca_file: Path | None = None
    smtp_timeout: float = 30.0

    @property
    def smtp(self) -> SmtpServer | None:
        return parse_smtp_url(self.smtp_url) if self.smtp_url else None

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_url and self.mail_from)

    @property
    def exports_root(self) -> Path:
        """The folder of scheduled exports: one folder per assembly handle inside."""
        return (
            self.exports_dir if self.exports_dir is not None else self.media_dir.parent / "exports"
        )

    @property
    def host(self) -> str:
        """host[:port] of the public URL: what WebFinger handles and actor ids use."""
        return urlsplit(self.base_url).netloc

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def user_agent(self) -> str:
        return f"InterOcc/{VERSION} (+{self.base_url}/)"


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def _float(name: str, raw: str, *, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def _base_url(raw: str) -> str:
    name = "INTEROCC_BASE_URL"
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL such as https://example.org, not {raw!r}")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ConfigError(f"{name} must have no path, query or fragment, not {raw!r}")
    try:
        parts.port  # noqa: B018 - validates the port number
    except ValueError:
        raise ConfigError(f"{name} has a bad port: {raw!r}") from None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _database_url(raw: str) -> str:
    name = "INTEROCC_DATABASE_URL"
    if raw.startswith("sqlite:///"):
        raw = "sqlite+aiosqlite:///" + raw.removeprefix("sqlite:///")
    if raw.startswith(("postgres://", "postgresql://")):
        raw = "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if not raw.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            f"{name} must be sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB, "
            f"not {raw!r}"
        )
    return raw


SMTP_SCHEMES = {"smtp": ("starttls", 587), "smtps": ("implicit", 465), "smtp+plain": ("none", 25)}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def parse_smtp_url(raw: str) -> SmtpServer:
    """``smtp://user:password@host:587`` (STARTTLS required), ``smtps://…:465`` (TLS from
    the first byte) or ``smtp+plain://host:25`` (no TLS); user and password
    percent-encoded. Raises ConfigError naming INTEROCC_SMTP_URL (without the password)."""
    name = "INTEROCC_SMTP_URL"
    parts = urlsplit(raw.strip())
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
        raise ConfigError(
            f"{name} must be smtp://[user:password@]host[:port] (STARTTLS), smtps://… (TLS)"
            f" or smtp+plain://host[:port], not {shown!r}"
        )
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ConfigError(f"{name} must have no path, query or fragment, not {shown!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} has a bad port: {shown!r}") from None
    tls, default_port = SMTP_SCHEMES[parts.scheme]
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if tls == "none" and username and parts.hostname not in _LOOPBACK:
        raise ConfigError(
            f"{name}: smtp+plain:// would send the password in the clear; use smtp:// (STARTTLS)"
            " or smtps://"
        )
    return SmtpServer(parts.hostname, port or default_port, tls, username, password)


def _mail_from(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    _, address = parseaddr(value)
    if "@" not in address or "\n" in value or "\r" in value:
        raise ConfigError(
            "INTEROCC_MAIL_FROM must be an address such as"
            f" 'InterOcc <noreply@example.org>', not {raw!r}"
        )
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env

    def get(name: str, default: str) -> str:
        return env.get(name, default)

    secret = env.get("INTEROCC_SECRET_KEY", "")
    if len(secret) < 32:
        raise ConfigError(
            "INTEROCC_SECRET_KEY must be set to a random string of at least 32 characters"
        )
    log_level = get("INTEROCC_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(
            f"INTEROCC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}"
        )
    exports_dir = get("INTEROCC_EXPORTS_DIR", "").strip()
    smtp_url = get("INTEROCC_SMTP_URL", "").strip()
    if smtp_url:
        parse_smtp_url(smtp_url)
    mail_from = _mail_from(get("INTEROCC_MAIL_FROM", ""))
    if bool(smtp_url) != bool(mail_from):
        raise ConfigError(
            "INTEROCC_SMTP_URL and INTEROCC_MAIL_FROM go together: set both to send mail,"
            " or neither"
        )
    smtp_ca_file = get("INTEROCC_SMTP_CA_FILE", "").strip()
    return Settings(
        base_url=_base_url(get("INTEROCC_BASE_URL", "http://127.0.0.1:8000")),
        database_url=_database_url(get("INTEROCC_DATABASE_URL", DEFAULT_DATABASE_URL)),
        secret_key=secret,
        allow_private_addresses=_bool(
            "INTEROCC_ALLOW_PRIVATE_ADDRESSES", get("INTEROCC_ALLOW_PRIVATE_ADDRESSES", "false")
        ),
        signature_window=timedelta(
            seconds=_int(
                "INTEROCC_SIGNATURE_WINDOW_SECONDS",
                get("INTEROCC_SIGNATURE_WINDOW_SECONDS", "3600"),
                minimum=30,
                maximum=86_400,
            )
        ),
        max_body_bytes=_int(
            "INTEROCC_MAX_BODY_BYTES",
            get("INTEROCC_MAX_BODY_BYTES", "1000000"),
            minimum=10_000,
            maximum=100_000_000,
        ),
        fetch_timeout=_float(
            "INTEROCC_FETCH_TIMEOUT", get("INTEROCC_FETCH_TIMEOUT", "10"), minimum=0.1, maximum=120
        ),
        fetch_max_bytes=_int(
            "INTEROCC_FETCH_MAX_BYTES",
            get("INTEROCC_FETCH_MAX_BYTES", "2000000"),
            minimum=10_000,
            maximum=100_000_000,
        ),
        delivery_timeout=_float(
            "INTEROCC_DELIVERY_TIMEOUT",
            get("INTEROCC_DELIVERY_TIMEOUT", "20"),
            minimum=0.1,
            maximum=300,
        ),
        delivery_connect_timeout=_float(
            "INTEROCC_DELIVERY_CONNECT_TIMEOUT",
            get("INTEROCC_DELIVERY_CONNECT_TIMEOUT", "5"),
            minimum=0.1,
            maximum=120,
        ),
        delivery_concurrency=_int(
            "INTEROCC_DELIVERY_CONCURRENCY",
            get("INTEROCC_DELIVERY_CONCURRENCY", "32"),
            minimum=1,
            maximum=512,
        ),
        delivery_per_host=_int(
            "INTEROCC_DELIVERY_PER_HOST",
            get("INTEROCC_DELIVERY_PER_HOST", "2"),
            minimum=1,
            maximum=64,
        ),
        delivery_slow_seconds=_float(
            "INTEROCC_DELIVERY_SLOW_SECONDS",
            get("INTEROCC_DELIVERY_SLOW_SECONDS", "1"),
            minimum=0.05,
            maximum=300,
        ),
        delivery_slow_max=_int(
            "INTEROCC_DELIVERY_SLOW_MAX",
            get("INTEROCC_DELIVERY_SLOW_MAX", "128"),
            minimum=0,
            maximum=4_096,
        ),
        host_failure_threshold=_int(
            "INTEROCC_HOST_FAILURE_THRESHOLD",
            get("INTEROCC_HOST_FAILURE_THRESHOLD", "5"),
            minimum=1,
            maximum=1_000,
        ),
        host_probe_first=timedelta(
            seconds=_float(
                "INTEROCC_HOST_PROBE_FIRST_SECONDS",
                get("INTEROCC_HOST_PROBE_FIRST_SECONDS", "60"),
                minimum=0.1,
                maximum=86_400,
            )
        ),
        host_probe_most=timedelta(
            seconds=_float(
                "INTEROCC_HOST_PROBE_MOST_SECONDS",
                get("INTEROCC_HOST_PROBE_MOST_SECONDS", "21600"),
                minimum=0.1,
                maximum=7 * 86_400,
            )
        ),
        host_unavailable_after=timedelta(
            days=_float(
                "INTEROCC_HOST_UNAVAILABLE_DAYS",
                get("INTEROCC_HOST_UNAVAILABLE_DAYS", "7"),
                minimum=0.0001,
                maximum=365,
            )
        ),
        host_release_per_minute=_int(
            "INTEROCC_HOST_RELEASE_PER_MINUTE",
            get("INTEROCC_HOST_RELEASE_PER_MINUTE", "120"),
            minimum=1,
            maximum=1_000_000,
        ),
        delivery_max_attempts=_int(
            "INTEROCC_DELIVERY_MAX_ATTEMPTS",
            get("INTEROCC_DELIVERY_MAX_ATTEMPTS", "16"),
            minimum=1,
            maximum=100,
        ),
        inbox_max_attempts=_int(
            "INTEROCC_INBOX_MAX_ATTEMPTS",
            get("INTEROCC_INBOX_MAX_ATTEMPTS", "5"),
            minimum=1,
            maximum=50,
        ),
        inbox_concurrency=_int(
            "INTEROCC_INBOX_CONCURRENCY",
            get("INTEROCC_INBOX_CONCURRENCY", "8"),
            minimum=1,
            maximum=256,
        ),
        inbox_lease=timedelta(
            seconds=_int(
                "INTEROCC_INBOX_LEASE_SECONDS",
                get("INTEROCC_INBOX_LEASE_SECONDS", "60"),
                minimum=2,
                maximum=3_600,
            )
        ),
        exports_dir=Path(exports_dir) if exports_dir else None,
        smtp_url=smtp_url,
        mail_from=mail_from,
        smtp_ca_file=Path(smtp_ca_file) if smtp_ca_file else None,
        smtp_timeout=_float(
            "INTEROCC_SMTP_TIMEOUT", get("INTEROCC_SMTP_TIMEOUT", "30"), minimum=1, maximum=300
        ),
        export_interval=timedelta(
            hours=_int(
                "INTEROCC_EXPORT_INTERVAL_HOURS",
                get("INTEROCC_EXPORT_INTERVAL_HOURS", "24"),
                minimum=1,
                maximum=24 * 31,
            )
        ),
        instance_name=get("INTEROCC_INSTANCE_NAME", "InterOcc").strip() or "InterOcc",
        log_level=log_level,
        media_dir=Path(get("INTEROCC_MEDIA_DIR", DEFAULT_MEDIA_DIR).strip() or DEFAULT_MEDIA_DIR),
        max_upload_bytes=_int(
            "INTEROCC_MAX_UPLOAD_BYTES",
            get("INTEROCC_MAX_UPLOAD_BYTES", "8000000"),
            minimum=10_000,
            maximum=200_000_000,
        ),
        session_lifetime=timedelta(
            days=_int(
                "INTEROCC_SESSION_DAYS", get("INTEROCC_SESSION_DAYS", "30"), minimum=1, maximum=365
            )
        ),
        authorized_fetch=_bool(
            "INTEROCC_AUTHORIZED_FETCH", get("INTEROCC_AUTHORIZED_FETCH", "false")
        ),
        inbox_per_actor=_int(
            "INTEROCC_INBOX_PER_ACTOR_PER_MINUTE",
            get("INTEROCC_INBOX_PER_ACTOR_PER_MINUTE", "300"),
            minimum=1,
            maximum=10_000_000,
        ),
        inbox_per_host=_int(
            "INTEROCC_INBOX_PER_HOST_PER_MINUTE",
            get("INTEROCC_INBOX_PER_HOST_PER_MINUTE", "3000"),
            minimum=1,
            maximum=10_000_000,
        ),
        key_fetches_per_host=_int(
            "INTEROCC_KEY_FETCHES_PER_HOST_PER_MINUTE",
            get("INTEROCC_KEY_FETCHES_PER_HOST_PER_MINUTE", "60"),
            minimum=1,
            maximum=100_000,
        ),
        key_failure_ttl=timedelta(
            seconds=_int(
                "INTEROCC_KEY_FAILURE_CACHE_SECONDS",
                get("INTEROCC_KEY_FAILURE_CACHE_SECONDS", "300"),
                minimum=0,
                maximum=86_400,
            )
        ),
        read_cache_seconds=_int(
            "INTEROCC_READ_CACHE_SECONDS",
            get("INTEROCC_READ_CACHE_SECONDS", "5"),
            minimum=0,
            maximum=600,
        ),
    )
