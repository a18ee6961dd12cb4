"""Pages in the visitor's language: catalogues complete for every shipped language, the locale
chosen from the switcher, the account, the browser, and dates and numbers localised."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from server import i18n
from server.context import Context
from tests.helpers import approved_assembly
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [code for code in i18n.LANGUAGES if code != i18n.DEFAULT]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _extracted() -> dict[str, tuple[str, ...]]:
    """Every translatable string of the code and the templates, as babel.cfg extracts them."""
    method_map = [
        ("**.py", "python"),
        ("web/templates/**.html", "jinja2"),
        ("web/templates/mail/**.txt", "jinja2"),
    ]
    options = {
        "web/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
        "web/templates/mail/**.txt": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
    }
    found: dict[str, tuple[str, ...]] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        ROOT / "server", method_map, options
    ):
        ids = (message,) if isinstance(message, str) else tuple(message)
        found[ids[0]] = ids
    return found


@pytest.fixture(scope="module")
def extracted() -> dict[str, tuple[str, ...]]:
    return _extracted()


@pytest.mark.parametrize("locale", SHIPPED)
def test_every_string_is_translated(locale: str, extracted: dict[str, tuple[str, ...]]) -> None:
    """A string added to a page or an e-mail and not translated into a shipped language fails
    here (run `make translations`, then translate what is new in the .po files)."""
    path = ROOT / "server" / "translations" / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    untranslated, misplaced = [], []
    for key, ids in extracted.items():
        message = catalog.get(ids[0] if len(ids) == 1 else ids)
        strings = (
            []
            if message is None
            else ([message.string] if isinstance(message.string, str) else list(message.string))
        )
        if message is None or "fuzzy" in message.flags or not all(s.strip() for s in strings):
            untranslated.append(key)
            continue
        wanted = set(PLACEHOLDER.findall(" ".join(ids)))
        if any(set(PLACEHOLDER.findall(s)) - wanted for s in strings) or (
            len(ids) == 1 and set(PLACEHOLDER.findall(strings[0])) != wanted
        ):
            misplaced.append(key)
    assert not untranslated, f"{locale}: {len(untranslated)} untranslated, e.g. {untranslated[:5]}"
    assert not misplaced, f"{locale}: placeholders differ in {misplaced[:5]}"


def test_the_locale_is_the_visitors_choice_then_the_accounts_then_the_browsers() -> None:
    assert i18n.negotiate(chosen="ca", preferred="es", accept_language="fr") == "ca"
    assert i18n.negotiate(chosen=None, preferred="es", accept_language="fr") == "es"
    assert i18n.negotiate(chosen=None, preferred=None, accept_language="de, fr-CH;q=0.9") == "fr"
    assert i18n.negotiate(chosen=None, preferred=None, accept_language="es;q=0, fr;q=0.1") == "fr"
    assert i18n.negotiate(chosen="xx", preferred=None, accept_language="zz, *") == "en"
    assert i18n.negotiate(chosen=None, preferred=None, accept_language="," * 5000) == "en"


def test_dates_and_numbers_are_localised() -> None:
    moment = datetime(2026, 12, 2, 11, 53, tzinfo=UTC)
    expected = {
        "en": ("2 December 2026", "1,234.5"),
        "es": ("2 de diciembre de 2026", "1.234,5"),
        "fr": ("2 décembre 2026", "1\u202f234,5"),
        "ca": ("2 de desembre del 2026", "1.234,5"),
    }
    for locale, (date, number) in expected.items():
        with i18n.using(locale):
            assert i18n.format_date(moment) == date
            assert i18n.format_datetime(moment) == f"{date}, 11:53 UTC"
            assert i18n.format_number(1234.5) == number
    assert i18n.current() == "en"  # `using` puts the previous locale back


async def test_pages_speak_the_browsers_language_and_the_switcher_keeps_a_choice(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "plaza", name="Liberty Plaza")
    async with httpx.AsyncClient(base_url=ctx.urls.base, trust_env=False) as client:
        english = await client.get("/")
        spanish = await client.get("/", headers={"Accept-Language": "es-ES,es;q=0.9"})
        assert '<html lang="en">' in english.text and ">Assemblies<" in english.text
        assert '<html lang="es">' in spanish.text and ">Asambleas<" in spanish.text
        assert "Accept-Language" in spanish.headers["vary"]

        token = re.search(r'name="csrf_token" value="([^"]+)"', english.text)
        assert token is not None
        chosen = await client.post(
            "/language",
            data={"csrf_token": token.group(1), "lang": "fr", "next": "/actors/plaza"},
        )
        assert chosen.status_code == 303 and chosen.headers["location"] == "/actors/plaza"
        french = await client.get("/", headers={"Accept-Language": "es"})
        assert '<html lang="fr">' in french.text and ">Assemblées<" in french.text

        # Going back elsewhere than this site is not on offer; nor is a made-up language.
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            answer = await client.post(
                "/language", data={"csrf_token": token.group(1), "lang": "xx", "next": target}
            )
            assert answer.status_code == 303 and answer.headers["location"] == "/"
        still = await client.get("/")
        assert '<html lang="fr">' in still.text

        # Without the form's token nothing changes.
        forged = await client.post("/language", data={"lang": "ca", "next": "/"})
        assert forged.status_code == 403
        assert '<html lang="fr">' in (await client.get("/")).text


async def test_a_signed_in_choice_is_kept_with_the_account(
    ctx: Context, server: ServerThread
) -> None:
    """The switcher, used while signed in, sets the account's language: another browser of
    the same account (no cookie, another Accept-Language) gets it too."""
    from sqlalchemy import select

    from server.models import User
    from tests.helpers_web import create_user, log_in

    await create_user(ctx, "ana@example.org")
    async with httpx.AsyncClient(base_url=ctx.urls.base, trust_env=False) as first:
        await log_in(first, "ana@example.org")
        page = await first.get("/dashboard")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        chosen = await first.post(
            "/language", data={"csrf_token": token.group(1), "lang": "ca", "next": "/dashboard"}
        )
        assert chosen.status_code == 303
    async with ctx.sessions() as session:
        assert await session.scalar(select(User.language)) == "ca"
    async with httpx.AsyncClient(base_url=ctx.urls.base, trust_env=False) as second:
        await log_in(second, "ana@example.org")
        other = await second.get("/dashboard", headers={"Accept-Language": "fr"})
        assert '<html lang="ca">' in other.text


# aria-label="{{ _("…") }}" on an element whose text is {{ _("…") }}.
LABELLED = re.compile(
    r'aria-label="\{\{ _\("((?:[^"\\]|\\.)*)"[^}]*\}\}"[^>]*>\s*'
    r'\{\{ _\("((?:[^"\\]|\\.)*)"'
)


def test_a_named_button_says_its_visible_words_in_every_language() -> None:
    """WCAG 2.5.3 (label in name): where a template gives a button or link an aria-label
    beside its visible text, each translation of the label contains the visible words."""
    pairs = set()
    for path in (ROOT / "server" / "web" / "templates").rglob("*.html"):
        source = path.read_text(encoding="utf-8")
        for match in LABELLED.finditer(source):
            pairs.add((path.name, match.group(1), match.group(2)))
    assert pairs  # the templates do have such buttons
    for locale in SHIPPED:
        path = ROOT / "server" / "translations" / locale / "LC_MESSAGES" / "messages.po"
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=locale)
        for name, label, visible in pairs:
            assert visible.lower() in label.lower(), (name, label, visible)
            said, shown = catalog.get(label), catalog.get(visible)
            assert said is not None and shown is not None, (locale, label, visible)
            assert str(shown.string).lower() in str(said.string).lower(), (
                locale,
                name,
                said.string,
            )
