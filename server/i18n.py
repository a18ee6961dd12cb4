"""The language of pages and e-mails: gettext catalogues (Babel) and the locale of the request.

Catalogues live in ``server/translations/<locale>/LC_MESSAGES/messages.po`` (compiled to
``.mo`` by ``make translations``; the ``.po`` is read directly when no ``.mo`` is there, so a
fresh checkout works). English is the source language. The locale of a request is chosen in
this order: the visitor's own choice (the language switcher's cookie), the account's
preference, the browser's ``Accept-Language``, English.

The current locale is a context variable: each request (an asyncio task) has its own, so
pages rendered at the same time for different visitors never mix languages. Templates call
``_()`` / ``ngettext()`` through Jinja's i18n extension, bound to the functions here.
"""

from __future__ import annotations

import gettext as _gettext
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as _format_date
from babel.dates import format_time as _format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

DEFAULT = "en"
# The languages pages are shipped in, with their own names (for the switcher).
LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "ca": "Català",
}
TRANSLATIONS = Path(__file__).parent / "translations"
COOKIE = "lang"

_current: ContextVar[str] = ContextVar("interocc_locale", default=DEFAULT)


@lru_cache(maxsize=len(LANGUAGES))
def catalogue(locale: str) -> _gettext.NullTranslations:
    """The translations of ``locale`` (English: none)."""
    if locale == DEFAULT or locale not in LANGUAGES:
        return _gettext.NullTranslations()
    folder = TRANSLATIONS / locale / "LC_MESSAGES"
    mo, po = folder / "messages.mo", folder / "messages.po"
    if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as handle:
            return _gettext.GNUTranslations(handle)
    if not po.exists():
        return _gettext.NullTranslations()
    # No compiled catalogue (a fresh checkout): compile the .po in memory.
    with po.open("rb") as handle:
        messages = read_po(handle, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, messages, use_fuzzy=False)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def current() -> str:
    return _current.get()


def use(locale: str) -> None:
    """Make ``locale`` the language of the rest of this request (this task)."""
    _current.set(locale if locale in LANGUAGES else DEFAULT)


@contextmanager
def using(locale: str) -> Iterator[None]:
    """``locale`` for the ``with`` block only (an e-mail in its addressee's language)."""
    token = _current.set(locale if locale in LANGUAGES else DEFAULT)
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return catalogue(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return catalogue(_current.get()).ngettext(singular, plural, n)


_ = gettext


def negotiate(*, chosen: str | None, preferred: str | None, accept_language: str | None) -> str:
    """The locale of a request: the visitor's choice, the account's, the browser's, English."""
    for candidate in (chosen, preferred):
        if candidate in LANGUAGES:
            return candidate
    for tag in _accepted(accept_language or ""):
        try:
            language = Locale.parse(tag, sep="-").language
        except (ValueError, UnknownLocaleError):
            continue
        if language in LANGUAGES:
            return language
    return DEFAULT


def _accepted(header: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:1000].split(",")[:30]):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, index, tag.strip()))
    return [tag for _q, _i, tag in sorted(ranked)]


def _locale() -> Locale:
    # English dates as they are written outside the United States: "2 December 2026".
    current = _current.get()
    return Locale.parse("en_GB" if current == DEFAULT else current)


def format_date(moment: datetime | None) -> str:
    """ "2 December 2026", "2 de diciembre de 2026"…"""
    return _format_date(moment, format="long", locale=_locale()) if moment else ""


def format_datetime(moment: datetime | None) -> str:
    """The date and the time in UTC, in the current language."""
    if moment is None:
        return ""
    when = _format_date(moment, format="long", locale=_locale())
    return f"{when}, {_format_time(moment, format='HH:mm', locale=_locale())} UTC"


def format_number(value: float | int) -> str:
    return format_decimal(value, locale=_locale())
