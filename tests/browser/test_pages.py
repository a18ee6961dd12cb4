"""Acceptance (issue 4), in a real browser: from sign-up to a communiqué on Mastodon.

A person signs up and requests an assembly; the instance's admin logs in and approves
it; a Mastodon account (the loopback test peer) follows it; the facilitator writes a
communiqué in Markdown with a hashtag and an image, previews it and publishes it. The
public pages show it, both Atom feeds carry it, and the follower's server receives the
Create with the image attached and the hashtag tagged.

Every page is screenshotted at desktop and phone widths (artifacts/screenshots/) and
checked: no serious or critical axe-core violation, no CSP violation, no script error, no
broken image or stylesheet, no POST form without its CSRF token, no sideways scrolling.
Refusals a visitor can meet are checked as a browser meets them: the right status and a
clear message on the page.

The journey is two module fixtures, ``people`` (up to the approved, followed assembly)
and ``published`` (the communiqué), each step asserting its outcome, so that a broken
composer does not hide what the other pages look like.
"""

from __future__ import annotations

import gc
import io
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FilePayload,
    Locator,
    Page,
    Response,
    StorageState,
    expect,
)
from sqlalchemy import select

from server import accounts, archive, assemblies, exports, moving
from server.context import create_context
from server.models import Activity, Communique, Share
from tests.browser.audit import TIMEOUT_MS, Auditor, Visit
from tests.browser.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ARTIFACTS, Site, run_async
from tests.support import deliveries as delivery_scene
from tests.support.peer import Received

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

HANDLE = "libertyplaza"
FACILITATOR = ("facilitator@example.org", "a long enough password for the plaza")
BYSTANDER = ("bystander@example.org", "another long enough password, too")
SOURCE = (
    "**General strike** on Thursday: every assembly joins the march. #GeneralStrike\n"
    "\n"
    "- Meet at the plaza at *noon*\n"
    "- Bring water and [the leaflet](https://example.org/leaflet)\n"
)
ALT = "A crowd with banners fills the plaza"
Role = str  # "anonymous", "facilitator" or "admin"


def png(width: int = 96, height: int = 64, *, noise: bool = False) -> bytes:
    """A real PNG (noise makes it incompressible, hence as large as its pixels)."""
    if noise:
        pixels = random.Random(width * height).randbytes(width * height * 3)
        image = Image.frombytes("RGB", (width, height), pixels)
    else:
        image = Image.new("RGB", (width, height), (200, 40, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def file_payload(name: str, data: bytes, mime: str = "image/png") -> FilePayload:
    return FilePayload(name=name, mimeType=mime, buffer=data)


# -- driving the browser --------------------------------------------------------------------


def new_context(browser: Browser, site: Site, state: StorageState | None = None) -> BrowserContext:
    context = browser.new_context(base_url=site.base_url, storage_state=state)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def form_with(page: Page, field: str) -> Locator:
    """The form in the page's main content that has a field named ``field``."""
    return page.locator(f"main form:has([name='{field}'])").first


def submit(page: Page, form: Locator, value: str | None = None) -> Response:
    """Press the form's submit button (the one with ``value``) and wait for the next page."""
    if value is None:
        button = form.locator("button[type=submit], input[type=submit], button:not([type])")
    else:
        button = form.locator(f"button[value='{value}'], input[type=submit][value='{value}']")
    with page.expect_navigation() as navigation:
        button.first.click()
    response = navigation.value
    assert response is not None, f"no page after submitting on {page.url}"
    return response


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def shown(page: Page) -> str:
    """Headings, errors and flash messages on the page, for assertion messages."""
    texts = page.locator("p.error, p.form-error, p.flash, main h1, main h1 + p").all_inner_texts()
    return " | ".join(texts) or page.locator("main").inner_text()[:500]


def goto(path: str, status: int = 200) -> Visit:
    """A visit: GET ``path``, which must answer ``status`` (and not redirect elsewhere)."""

    def visit(page: Page) -> None:
        response = page.goto(path)
        assert response is not None, path
        assert response.status == status, (
            f"GET {path} answered {response.status}, not {status}: {shown(page)}"
        )
        if status == 200:
            assert path_of(page) == urlsplit(path).path, f"GET {path} ended on {page.url}"

    return visit


# -- the journey ----------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """Who the journey signed in (their browsers' storage), once the assembly is approved."""

    facilitator: StorageState
    admin: StorageState
    bystander: StorageState  # signed up, facilitates nothing

    def state(self, role: Role) -> StorageState | None:
        return {"anonymous": None, "facilitator": self.facilitator, "admin": self.admin}[role]


@dataclass(frozen=True)
class Published:
    public_id: str
    permalink: str
    preview_html: str  # the preview's rendering of the Markdown


def sign_up(browser: Browser, site: Site, email: str, password: str) -> StorageState:
    with new_context(browser, site) as context:
        page = context.new_page()
        page.goto("/signup")
        form = form_with(page, "email")
        form.locator("[name=email]").fill(email)
        form.locator("[name=password]").fill(password)
        response = submit(page, form)
        assert response.ok, f"sign-up answered {response.status}: {shown(page)}"
        assert path_of(page) != "/signup", f"sign-up refused: {shown(page)}"
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        return context.storage_state()


def log_in(browser: Browser, site: Site, email: str, password: str) -> StorageState:
    with new_context(browser, site) as context:
        page = context.new_page()
        page.goto("/login")
        form = form_with(page, "password")
        form.locator("[name=email]").fill(email)
        form.locator("[name=password]").fill(password)
        response = submit(page, form)
        assert response.ok, f"login answered {response.status}: {shown(page)}"
        assert path_of(page) != "/login", f"login refused: {shown(page)}"
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        return context.storage_state()


def request_assembly(browser: Browser, site: Site, facilitator: StorageState) -> None:
    with new_context(browser, site, facilitator) as context:
        page = context.new_page()
        page.goto("/assemblies/new")
        form = form_with(page, "handle")
        form.locator("[name=handle]").fill(HANDLE)
        form.locator("[name=name]").fill("Liberty Plaza General Assembly")
        form.locator("[name=summary]").fill(
            "The people's assembly of Liberty Plaza, New York City.\n\nWe meet every evening."
        )
        form.locator("[name=place]").fill("New York City")
        form.locator("[name=languages]").fill("en, es")
        form.locator("[name=manually_approves_followers]").set_checked(False)
        form.locator("[name=avatar]").set_input_files(file_payload("avatar.png", png(128, 128)))
        response = submit(page, form)
        assert response.ok, f"the assembly request answered {response.status}: {shown(page)}"
        assert path_of(page) != "/assemblies/new", f"request refused: {shown(page)}"
        expect(page.locator("p.flash")).to_contain_text(f"@{HANDLE}")


def approve(browser: Browser, site: Site, admin: StorageState) -> None:
    with new_context(browser, site, admin) as context:
        page = context.new_page()
        page.goto("/admin/assemblies")
        form = page.locator(f"form[action$='/admin/assemblies/{HANDLE}/approve']").first
        expect(form, "no approve button for the pending assembly").to_be_visible()
        response = submit(page, form)
        assert response.ok, f"approval answered {response.status}: {shown(page)}"
        expect(page.locator("p.flash")).to_be_visible()


def follow_from_mastodon(site: Site) -> None:
    run_async(site.peer.follow(site.member, f"{HANDLE}@{site.host}"))

    def accepted(received: list[Received]) -> bool:
        return any(r.verified and (r.json or {}).get("type") == "Accept" for r in received)

    run_async(site.peer.wait_for(accepted, timeout=20))


def compose_and_publish(browser: Browser, site: Site, facilitator: StorageState) -> Published:
    image = file_payload("plaza.png", png())
    with new_context(browser, site, facilitator) as context:
        page = context.new_page()
        page.goto(f"/manage/{HANDLE}/compose")
        form = form_with(page, "content")
        form.locator("[name=content]").fill(SOURCE)
        form.locator("[name=attachment_1]").set_input_files(image)
        form.locator("[name=alt_1]").fill(ALT)
        response = submit(page, form, "preview")
        assert response.ok, f"the preview answered {response.status}: {shown(page)}"
        preview = page.locator(".preview").first
        expect(preview, "the preview shows the communiqué").to_contain_text("General strike")
        preview_html = preview.inner_html()

        form = form_with(page, "content")
        assert form.locator("[name=content]").input_value().strip() == SOURCE.strip()
        # A server cannot refill a file input: unless the preview kept the upload (a hidden
        # field says so), choose the file again, as a person would.
        if not form.locator("input[type=hidden][name^='kept_']").count():
            form.locator("[name=attachment_1]").set_input_files(image)
            form.locator("[name=alt_1]").fill(ALT)
        response = submit(page, form, "publish")
        assert response.ok, f"publishing answered {response.status}: {shown(page)}"
        # Publishing leads to the new communiqué's permalink, with a flash message.
        assert path_of(page).startswith(f"/actors/{HANDLE}/communiques/"), (
            f"publishing ended on {page.url}: {shown(page)}"
        )
        expect(page.locator("p.flash")).to_be_visible()
        permalink = page.url.split("#")[0].split("?")[0]
        return Published(permalink.rsplit("/", 1)[1], permalink, preview_html)


@pytest.fixture(scope="module")
def people(browser: Browser, site: Site) -> People:
    """The journey up to an approved assembly that a Mastodon account follows."""
    facilitator = sign_up(browser, site, *FACILITATOR)
    request_assembly(browser, site, facilitator)
    admin = log_in(browser, site, ADMIN_EMAIL, ADMIN_PASSWORD)
    approve(browser, site, admin)
    follow_from_mastodon(site)
    bystander = sign_up(browser, site, *BYSTANDER)
    return People(facilitator, admin, bystander)


@pytest.fixture(scope="module")
def published(browser: Browser, site: Site, people: People) -> Published:
    """The rest of the journey: the facilitator previews, then publishes, a communiqué."""
    return compose_and_publish(browser, site, people.facilitator)


def test_the_preview_renders_markdown(published: Published) -> None:
    assert "<strong>General strike</strong>" in published.preview_html
    assert "<em>noon</em>" in published.preview_html
    assert "GeneralStrike" in published.preview_html
    assert ALT in published.preview_html  # the image kept for publishing, with its alt text


def test_the_public_pages_show_the_communique(
    browser: Browser, site: Site, published: Published
) -> None:
    with new_context(browser, site) as context:
        page = context.new_page()
        for url in (f"/actors/{HANDLE}", published.permalink):
            response = page.goto(url)
            assert response is not None and response.status == 200, url
            article = page.locator("article.communique, main").first
            expect(article.locator("strong", has_text="General strike")).to_have_count(1)
            expect(article.locator("li em")).to_have_text("noon")
            hashtag = article.locator("a", has_text=re.compile("GeneralStrike"))
            expect(hashtag).to_have_count(1)
            image = article.locator(f"img[alt='{ALT}']")
            expect(image).to_have_count(1)
            src = image.get_attribute("src") or ""
            assert src.startswith(("/media/", f"{site.base_url}/media/")), src
            image.scroll_into_view_if_needed()
            # The browser fetched and decoded it: not just an <img> tag.
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
            )


def test_the_atom_feeds_carry_it(browser: Browser, site: Site, published: Published) -> None:
    with new_context(browser, site) as context:
        for url in (f"/actors/{HANDLE}/feed.atom", "/feed.atom"):
            response = context.request.get(url)
            assert response.status == 200, f"GET {url}: {response.status}"
            assert "atom" in response.headers.get("content-type", ""), response.headers
            feed = feedparser.parse(response.body())
            assert not feed.bozo, f"{url} is not well-formed: {feed.get('bozo_exception')!r}"
            assert feed.version == "atom10", url
            entries = [e for e in feed.entries if e.get("link") == published.permalink]
            assert len(entries) == 1, (url, [e.get("link") for e in feed.entries])
            entry = entries[0]
            html = entry.content[0].value if entry.get("content") else entry.get("summary", "")
            assert "<strong>General strike</strong>" in html, html
            assert entry.get("updated") or entry.get("published"), entry


def test_the_follower_on_mastodon_received_the_create(site: Site, published: Published) -> None:
    def created(received: list[Received]) -> bool:
        return any(
            r.verified
            and (r.json or {}).get("type") == "Create"
            and ((r.json or {}).get("object") or {}).get("id") == published.permalink
            for r in received
        )

    received = run_async(site.peer.wait_for(created, timeout=20))
    creates = [r.json for r in received if r.verified and r.json and r.json["type"] == "Create"]
    assert len(creates) == 1, "the Create arrived more than once"
    note = creates[0]["object"]
    assert note["type"] == "Note"
    assert "<strong>General strike</strong>" in note["content"]
    (attachment,) = note["attachment"]
    assert attachment["mediaType"] == "image/png", attachment
    assert attachment["name"] == ALT
    assert attachment["url"].startswith(f"{site.base_url}/media/")
    hashtags = [t for t in note["tag"] if t.get("type") == "Hashtag"]
    assert [t["name"].lower() for t in hashtags] == ["#generalstrike"], note["tag"]
    assert hashtags[0]["href"].startswith(site.base_url), hashtags
    media = run_async(site.peer.fetch(attachment["url"], accept="image/*"))
    assert media.status_code == 200, media.status_code
    assert media.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(media.content)).size == (96, 64)


# -- every page: screenshots, CSP, axe ------------------------------------------------------


def signup_with_errors(page: Page) -> None:
    page.goto("/signup")
    form = form_with(page, "email")
    form.locator("[name=email]").fill("not an address")
    form.locator("[name=password]").fill("short")
    # The browser's own checks would stop the form first; the server's are under test.
    form.evaluate("f => { f.noValidate = true; }")
    submit(page, form)
    expect(page.locator("p.error").first).to_be_visible()


def compose_preview(page: Page) -> None:
    goto(f"/manage/{HANDLE}/compose")(page)
    form = form_with(page, "content")
    form.locator("[name=content]").fill(SOURCE)
    response = submit(page, form, "preview")
    assert response.ok, f"the preview answered {response.status}: {shown(page)}"
    expect(page.locator(".preview").first).to_contain_text("General strike")


def follow_refused(page: Page) -> None:
    """The follow box of the assembly page, sent with no handle in it: the page again,
    with the reason beside the box (no server was asked)."""
    goto(f"/actors/{HANDLE}")(page)
    form = page.locator("form#remote-follow")
    form.locator("[name=acct]").fill("not a handle")
    response = submit(page, form)
    assert response.status == 400, f"answered {response.status}: {shown(page)}"
    expect(page.locator("#e-remote-acct")).to_contain_text("type your handle")


# Pages anyone sees, whatever the journey made.
PUBLIC_PAGES: dict[str, Visit] = {
    "home": goto("/"),
    "about": goto("/about"),
    "signup": goto("/signup"),
    "signup-field-errors": signup_with_errors,
    "login": goto("/login"),
    "password-forgot": goto("/password/forgot"),
    "password-reset-invalid": goto("/password/reset/1.not-a-token", 400),
    "email-confirm-invalid": goto("/account/confirm/1.not-a-token", 400),
    "not-found-assembly": goto("/actors/nosuchassembly", 404),
    "not-found-path": goto("/no/such/page", 404),
    "directory-search": goto("/?q=plaza&language=en"),
    "tag-unknown": goto("/tags/neverusedhere", 404),
}
# Pages of the approved assembly, as the journey's people see them.
ASSEMBLY_PAGES: dict[str, tuple[Role, Visit]] = {
    "assembly": ("anonymous", goto(f"/actors/{HANDLE}")),
    "assembly-follow-refused": ("anonymous", follow_refused),
    "dashboard": ("facilitator", goto("/dashboard")),
    "assembly-request": ("facilitator", goto("/assemblies/new")),
    "manage": ("facilitator", goto(f"/manage/{HANDLE}")),
    "compose": ("facilitator", goto(f"/manage/{HANDLE}/compose")),
    "compose-preview": ("facilitator", compose_preview),
    "followers": ("facilitator", goto(f"/manage/{HANDLE}/followers")),
    "settings": ("facilitator", goto(f"/manage/{HANDLE}/settings")),
    "facilitators": ("facilitator", goto(f"/manage/{HANDLE}/facilitators")),
    "timeline": ("facilitator", goto(f"/manage/{HANDLE}/timeline")),
    "following": ("facilitator", goto(f"/manage/{HANDLE}/following")),
    "letters": ("facilitator", goto(f"/manage/{HANDLE}/letters")),
    "letter-new": ("facilitator", goto(f"/manage/{HANDLE}/letters/new")),
    "admin": ("admin", goto("/admin")),
    "admin-assemblies": ("admin", goto("/admin/assemblies")),
    "admin-accounts": ("admin", goto("/admin/accounts")),
    "admin-settings": ("admin", goto("/admin/settings")),
    "admin-domains": ("admin", goto("/admin/domains")),
    "admin-follows": ("admin", goto("/admin/follows")),
    "admin-reports": ("admin", goto("/admin/reports")),
    "admin-relays": ("admin", goto("/admin/relays")),
    "admin-import": ("admin", goto("/admin/import")),
    "account": ("facilitator", goto("/account")),
    "account-errors": ("facilitator", lambda page: account_with_errors(page)),
    "account-delete": ("facilitator", goto("/account/delete")),
    "account-admin": ("admin", goto("/account")),
}
COSIGNER = "https://asamblea-de-sol.example/actors/asamblea-popular-de-la-puerta-del-sol"


async def _add_cosignature(site: Site, public_id: str) -> None:
    """A co-signature by a remote assembly, verified on its own proof (as a forwarded one is)."""
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            communique = await session.scalar(
                select(Communique.id).where(Communique.public_id == public_id)
            )
            assert communique is not None
            session.add(
                Share(
                    communique_id=communique,
                    actor_uri=COSIGNER,
                    announce_uri=COSIGNER + "/announces/1",
                    actor_name="Asamblea Popular de la Puerta del Sol",
                    actor_type="Group",
                    verified_by=COSIGNER + "#ed25519-key",
                    verified_with="eddsa-jcs-2022",
                )
            )
    finally:
        await ctx.aclose()


@pytest.fixture(scope="module")
def cosigned(site: Site, published: Published) -> Published:
    run_async(_add_cosignature(site, published.public_id))
    return published


def permalink(c: Published) -> Visit:
    """The permalink: its proof of origin, and how its co-signature was verified."""

    def visit(page: Page) -> None:
        goto(urlsplit(c.permalink).path)(page)
        expect(page.locator(".provenance .badge.verified")).to_have_text("Verified")
        expect(page.locator(".provenance code.key")).to_have_text(
            c.permalink.split("/communiques/")[0] + "#ed25519-key"
        )
        line = page.locator(".cosigners li", has_text="Asamblea Popular")
        expect(line).to_contain_text("verified: integrity proof by its key")
        expect(line.locator("code.key")).to_have_text(COSIGNER + "#ed25519-key")

    return visit


def home_with_latest(c: Published) -> Visit:
    """The home page, leading with the latest communiqués: the published one first."""

    def visit(page: Page) -> None:
        goto("/")(page)
        latest = page.locator(".recent-list .recent-item").first
        expect(latest.locator("a.permalink")).to_have_attribute("href", c.permalink)
        expect(latest).to_contain_text("General strike")

    return visit


def tag_page(c: Published) -> Visit:
    """Where the communiqué's #GeneralStrike leads: its tag page, listing it."""

    def visit(page: Page) -> None:
        goto("/tags/generalstrike")(page)
        expect(page.locator("h1")).to_have_text("#GeneralStrike")
        expect(page.locator(f"article.communique a.permalink[href='{c.permalink}']")).to_have_count(
            1
        )

    return visit


def account_with_errors(page: Page) -> None:
    """The account page with the server's refusal of a new password beside its field."""
    goto("/account")(page)
    form = page.locator("main form[action='/account/password']")
    form.locator("[name=current_password]").fill(FACILITATOR[1])
    form.locator("[name=password]").fill("short")
    form.evaluate("f => { f.noValidate = true; }")
    submit(page, form)
    expect(page.locator("p.error").first).to_be_visible()


async def _link_token(site: Site, email: str, purpose: str) -> str:
    """A mailed link's token, minted as the worker mints it (the site sends no mail)."""
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            user = await accounts.find_by_email(session, email)
            assert user is not None
            return await accounts.mint_link_token(
                session, user=user, purpose=purpose, email=email, now=ctx.clock()
            )
    finally:
        await ctx.aclose()


def mailed_link(path: str, purpose: str) -> Callable[[Site], Visit]:
    """A page opened from a mailed link (a fresh token each visit: a link works once)."""

    def visit_on(site: Site) -> Visit:
        def visit(page: Page) -> None:
            token = run_async(_link_token(site, FACILITATOR[0], purpose))
            goto(f"{path}/{token}")(page)
            expect(page.locator("main form button[type=submit]")).to_be_visible()

        return visit

    return visit_on


# Pages opened from the links the instance mails (password reset, address confirmation).
LINK_PAGES: dict[str, Callable[[Site], Visit]] = {
    "password-reset": mailed_link("/password/reset", accounts.RESET),
    "email-confirm": mailed_link("/account/confirm", accounts.CONFIRM),
}


# Pages of the published communiqué.
COMMUNIQUE_PAGES: dict[str, tuple[Role, Callable[[Published], Visit]]] = {
    "communique": ("anonymous", permalink),
    "home-latest": ("anonymous", home_with_latest),
    "tag": ("anonymous", tag_page),
    "communique-edit": (
        "facilitator",
        lambda c: goto(f"/manage/{HANDLE}/communiques/{c.public_id}/edit"),
    ),
}


def check(auditor: Auditor, name: str, visit: Visit, role: Role, people: People | None) -> None:
    state = people.state(role) if people is not None else None
    report = auditor.audit(name, visit, who=role, state=state)
    if report.problems():
        pytest.fail(report.failure(), pytrace=False)


@pytest.mark.parametrize("name", PUBLIC_PAGES)
def test_public_page_passes_axe_and_csp(auditor: Auditor, name: str) -> None:
    check(auditor, name, PUBLIC_PAGES[name], "anonymous", None)


@pytest.mark.parametrize("name", ASSEMBLY_PAGES)
def test_assembly_page_passes_axe_and_csp(auditor: Auditor, people: People, name: str) -> None:
    role, visit = ASSEMBLY_PAGES[name]
    check(auditor, name, visit, role, people)


@pytest.mark.parametrize("name", COMMUNIQUE_PAGES)
def test_communique_page_passes_axe_and_csp(
    auditor: Auditor, people: People, cosigned: Published, name: str
) -> None:
    role, visit = COMMUNIQUE_PAGES[name]
    check(auditor, name, visit(cosigned), role, people)


@pytest.mark.parametrize("name", LINK_PAGES)
def test_mailed_link_page_passes_axe_and_csp(
    auditor: Auditor, site: Site, people: People, name: str
) -> None:
    check(auditor, name, LINK_PAGES[name](site), "anonymous", None)


# -- the delivery pages, with servers in every state -----------------------------------------


async def _add_delivery_scene(site: Site, public_id: str) -> None:
    """tests/support/deliveries.py's servers, on the communiqué's Create (beside the real
    delivery to the Mastodon peer); nothing of it is due while the tests run."""
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            create = await session.scalar(
                select(Activity.id)
                .join(Communique, Communique.id == Activity.communique_id)
                .where(Communique.public_id == public_id, Activity.type == "Create")
            )
            assert create is not None, "the published communiqué has no Create"
            await delivery_scene.add_scene(session, create, now=ctx.clock())
    finally:
        await ctx.aclose()


@pytest.fixture(scope="module")
def servers_in_trouble(site: Site, published: Published) -> Published:
    run_async(_add_delivery_scene(site, published.public_id))
    return published


def delivery_page(c: Published) -> Visit:
    def visit(page: Page) -> None:
        goto(f"/manage/{HANDLE}/communiques/{c.public_id}/delivery")(page)
        expect(page.locator(".tally-item.held .tally-number")).to_have_text("5")
        rows = page.locator("table.deliveries tbody tr")
        expect(rows.first.locator("th")).to_have_text(delivery_scene.GONE)

    return visit


def federation_page(page: Page) -> None:
    goto("/admin/federation")(page)
    expect(page.get_by_role("button", name=f"Reset {delivery_scene.DOWN}")).to_be_visible()


DELIVERY_PAGES: dict[str, tuple[Role, Callable[[Published], Visit]]] = {
    "communique-delivery": ("facilitator", delivery_page),
    "admin-federation": ("admin", lambda c: federation_page),
}


@pytest.mark.parametrize("name", DELIVERY_PAGES)
def test_delivery_page_passes_axe_and_csp(
    auditor: Auditor, people: People, servers_in_trouble: Published, name: str
) -> None:
    role, visit = DELIVERY_PAGES[name]
    check(auditor, name, visit(servers_in_trouble), role, people)


# -- an assembly's other identities and its move ---------------------------------------------

OLD_HANDLE, NEW_HANDLE = "oldplaza", "plazaexile"  # the journey's assembly stays where it is


async def _add_assemblies_to_move(site: Site) -> None:
    """Two more approved assemblies; the journey's facilitator is an admin of the old one."""
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            user = await accounts.find_by_email(session, FACILITATOR[0])
            assert user is not None
            for handle in (OLD_HANDLE, NEW_HANDLE):
                await assemblies.create(
                    session,
                    handle=handle,
                    name=f"Plaza assembly ({handle})",
                    requested_by_id=user.id if handle == OLD_HANDLE else None,
                )
                await assemblies.approve(session, handle, now=ctx.clock())
    finally:
        await ctx.aclose()


async def _name_back(site: Site) -> None:
    """The new identity lists the old one among its aliases (done on its side)."""
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            target = f"@{OLD_HANDLE}@{site.host}"
            await moving.add_alias(session, ctx, handle=NEW_HANDLE, target=target)
    finally:
        await ctx.aclose()


def try_to_move(page: Page) -> None:
    """The move form, filled and confirmed; refused while the target does not name us."""
    goto(f"/manage/{OLD_HANDLE}/settings")(page)
    form = form_with(page, "target")
    form.locator("[name=target]").fill(f"@{NEW_HANDLE}@{urlsplit(page.url).netloc}")
    form.locator("[name=confirm]").check()
    response = submit(page, form)
    assert response.status == 400, f"answered {response.status}: {shown(page)}"
    expect(page.locator("#e-target")).to_contain_text("add this assembly as an alias there first")


def test_aliases_and_the_move_in_the_settings(
    browser: Browser, site: Site, people: People, auditor: Auditor
) -> None:
    run_async(_add_assemblies_to_move(site))
    settings = f"/manage/{OLD_HANDLE}/settings"
    new_uri = f"{site.base_url}/actors/{NEW_HANDLE}"
    with new_context(browser, site, people.facilitator) as context:
        page = context.new_page()
        goto(settings)(page)
        expect(page.get_by_role("heading", name="Other identities (aliases)")).to_be_visible()
        form = form_with(page, "alias")
        form.locator("[name=alias]").fill(f"@{NEW_HANDLE}@{site.host}")
        response = submit(page, form)
        assert response.ok and path_of(page) == settings, f"{response.status}: {shown(page)}"
        expect(page.locator("p.flash")).to_contain_text("is now an alias")
        expect(page.locator("ul.aliases")).to_contain_text(new_uri)
    check(auditor, "settings-aliases", goto(settings), "facilitator", people)
    check(auditor, "settings-move-refused", try_to_move, "facilitator", people)

    run_async(_name_back(site))
    with new_context(browser, site, people.facilitator) as context:
        page = context.new_page()
        goto(settings)(page)
        form = form_with(page, "target")
        form.locator("[name=target]").fill(new_uri)
        # The confirmation is required: the browser does not send the form without it.
        form.locator("button[type=submit]").click()
        assert path_of(page) == settings
        assert form.locator("[name=confirm]").evaluate("e => e.validity.valueMissing")
        form.locator("[name=confirm]").check()
        response = submit(page, form)
        assert response.ok and path_of(page) == settings, f"{response.status}: {shown(page)}"
        expect(page.locator("p.flash")).to_contain_text(f"has moved to {new_uri}")
        expect(page.locator(".moved-to")).to_contain_text(f"Moved to {new_uri} on")
        expect(page.locator("form[action$='/move']")).to_have_count(0)
    check(auditor, "settings-moved", goto(settings), "facilitator", people)
    check(auditor, "compose-moved", goto(f"/manage/{OLD_HANDLE}/compose"), "facilitator", people)


# -- archives: export, scheduled exports, import ---------------------------------------------

ARCHIVE_PASSPHRASE = "the plaza will come back, with its archive"
RETURNED = "plazareturns"


async def _export_due(site: Site) -> int:
    """What the worker does every minute: make the due scheduled exports. The site's own
    in-process worker may have made this one first (it looks every minute): either way one
    archive is kept afterwards, and that is what is returned."""
    ctx = await create_context(site.settings)
    try:
        await exports.run_due(ctx)
        return len(exports.kept(site.settings, HANDLE))
    finally:
        await ctx.aclose()


def export_refused(page: Page) -> None:
    """The export form with two different passphrases: the page again, with the reason."""
    goto(f"/manage/{HANDLE}/settings")(page)
    form = form_with(page, "export_passphrase")
    form.locator("[name=export_passphrase]").fill(ARCHIVE_PASSPHRASE)
    form.locator("[name=export_passphrase_again]").fill(ARCHIVE_PASSPHRASE.upper())
    response = submit(page, form)
    assert response.status == 400, f"answered {response.status}: {shown(page)}"
    expect(page.locator("#e-export_passphrase_again")).to_contain_text("differ")


def test_archives_in_the_settings_and_the_admin_import(
    browser: Browser, site: Site, people: People, auditor: Auditor
) -> None:
    settings = f"/manage/{HANDLE}/settings"
    with new_context(browser, site, people.facilitator) as context:
        page = context.new_page()
        goto(settings)(page)
        expect(page.get_by_role("heading", name="Export this assembly")).to_be_visible()
        form = form_with(page, "export_passphrase")
        form.locator("[name=export_passphrase]").fill(ARCHIVE_PASSPHRASE)
        form.locator("[name=export_passphrase_again]").fill(ARCHIVE_PASSPHRASE)
        with page.expect_download() as started:
            form.get_by_role("button", name="Export this assembly").click()
        download = started.value
        assert re.fullmatch(
            rf"{HANDLE}-\d{{4}}-\d{{2}}-\d{{2}}\.interocc", download.suggested_filename
        )
        sealed = Path(download.path()).read_bytes()
        assert archive.open_archive(sealed, ARCHIVE_PASSPHRASE).handle == HANDLE

        form = form_with(page, "schedule_passphrase")
        form.locator("[name=keep]").select_option("2")
        form.locator("[name=schedule_passphrase]").fill(ARCHIVE_PASSPHRASE)
        form.locator("[name=schedule_passphrase_again]").fill(ARCHIVE_PASSPHRASE)
        response = submit(page, form)
        assert response.ok and path_of(page) == settings, f"{response.status}: {shown(page)}"
        expect(page.locator("p.flash")).to_contain_text("Scheduled exports are on")
    assert run_async(_export_due(site)) == 1
    check(auditor, "settings-archives", goto(settings), "facilitator", people)
    check(auditor, "settings-export-refused", export_refused, "facilitator", people)
    with new_context(browser, site, people.facilitator) as context:
        page = context.new_page()
        goto(settings)(page)
        link = page.locator("ul.kept-archives a").first
        with page.expect_download() as started:
            link.click()
        kept = Path(started.value.path()).read_bytes()
        assert archive.open_archive(kept, ARCHIVE_PASSPHRASE).handle == HANDLE

    with new_context(browser, site, people.admin) as context:
        page = context.new_page()
        goto("/admin/import")(page)
        form = form_with(page, "archive")
        form.locator("[name=archive]").set_input_files(
            file_payload("plaza.interocc", sealed, "application/octet-stream")
        )
        form.locator("[name=handle]").fill(RETURNED)
        form.locator("[name=passphrase]").fill(ARCHIVE_PASSPHRASE)
        response = submit(page, form)
        assert response.ok and path_of(page) == "/admin/assemblies", shown(page)
        expect(page.locator("p.flash")).to_contain_text(f"@{RETURNED} is imported, pending")
        approve_form = page.locator(f"form[action$='/admin/assemblies/{RETURNED}/approve']").first
        response = submit(page, approve_form)
        assert response.ok, shown(page)
        expect(page.get_by_role("button", name=f"Recover followers of @{RETURNED}")).to_be_visible()
    check(auditor, "admin-assemblies-imported", goto("/admin/assemblies"), "admin", people)


# -- refusals, as a browser meets them --------------------------------------------------------


@pytest.fixture
def facilitator_page(browser: Browser, site: Site, people: People) -> Iterator[Page]:
    with new_context(browser, site, people.facilitator) as context:
        yield context.new_page()


def refused(page: Page, response: Response, status: int, message: str) -> None:
    assert response.status == status, f"{page.url} answered {response.status}, not {status}"
    expect(page.locator("main")).to_contain_text(re.compile(re.escape(message), re.I))


def test_a_form_without_its_csrf_token_is_refused(
    browser: Browser, site: Site, people: People
) -> None:
    with new_context(browser, site, people.facilitator) as context:
        page = context.new_page()
        goto(f"/manage/{HANDLE}/compose")(page)
        form = form_with(page, "content")
        form.locator("[name=content]").fill("A communiqué sent from a forged form.")
        form.locator("[name=attachment_1]").set_input_files(file_payload("forged.png", png()))
        form.locator("[name=csrf_token]").evaluate("e => e.remove()")
        response = submit(page, form, "publish")
        refused(page, response, 403, "did not come from this site")
    # The refused form's upload must have been closed by the server, not left to the
    # garbage collector, which warns "ResourceWarning: Unclosed file" (an error here).
    time.sleep(0.2)  # the server notices the closed connection and drops the request
    gc.collect()


def test_someone_elses_assembly_is_refused(browser: Browser, site: Site, people: People) -> None:
    with new_context(browser, site, people.bystander) as context:
        page = context.new_page()
        for path in (f"/manage/{HANDLE}/settings", f"/manage/{HANDLE}/compose"):
            response = page.goto(path)
            assert response is not None
            refused(page, response, 403, "not a facilitator of this assembly")


def test_admin_pages_refuse_a_facilitator(facilitator_page: Page) -> None:
    for path in ("/admin", "/admin/assemblies", "/admin/accounts"):
        response = facilitator_page.goto(path)
        assert response is not None
        refused(facilitator_page, response, 403, "only the instance's administrators")


def publish_with_attachment(page: Page, payload: FilePayload) -> Locator:
    """Try to publish with one attachment; returns the error shown (beside the file field)."""
    goto(f"/manage/{HANDLE}/compose")(page)
    form = form_with(page, "content")
    form.locator("[name=content]").fill("A communiqué with a doubtful attachment.")
    form.locator("[name=attachment_1]").set_input_files(payload)
    form.locator("[name=alt_1]").fill("a description")
    response = submit(page, form, "publish")
    assert response.status in (400, 413, 422), f"answered {response.status}: {shown(page)}"
    error = page.locator("#e-attachment_1")
    expect(error, f"no error beside the file field: {shown(page)}").to_be_visible()
    return error


def test_an_oversized_upload_is_refused(site: Site, facilitator_page: Page) -> None:
    limit = site.settings.max_upload_bytes
    side = int((limit / 3) ** 0.5) + 40  # a noise PNG a little larger than the limit
    data = png(side, side, noise=True)
    assert len(data) > limit
    error = publish_with_attachment(facilitator_page, file_payload("huge.png", data))
    expect(error).to_contain_text(re.compile(r"large|big|MB", re.I))


def test_a_non_image_disguised_as_an_image_is_refused(facilitator_page: Page) -> None:
    payload = file_payload("photo.png", b"#!/bin/sh\necho this is no picture\n" * 20)
    error = publish_with_attachment(facilitator_page, payload)
    expect(error).to_contain_text(re.compile(r"image|picture|PNG|JPEG|type", re.I))


# -- the same pages in Spanish ------------------------------------------------------------------


@pytest.fixture(scope="module")
def spanish_auditor(browser: Browser, site: Site, axe_script: Path) -> Iterator[Auditor]:
    """A visitor whose browser asks for Spanish (es-ES)."""
    auditor = Auditor(
        browser, base_url=site.base_url, axe_script=axe_script, artifacts=ARTIFACTS, locale="es-ES"
    )
    yield auditor
    auditor.close()


def in_spanish(visit: Visit, *words: str) -> Visit:
    def spanish(page: Page) -> None:
        visit(page)
        expect(page.locator("html")).to_have_attribute("lang", "es")
        for word in words:
            expect(page.locator("body")).to_contain_text(word)

    return spanish


SPANISH_PAGES: dict[str, tuple[Role, Visit]] = {
    "home-es": ("anonymous", in_spanish(goto("/"), "Asambleas")),
    "about-es": ("anonymous", in_spanish(goto("/about"))),
    "signup-es": ("anonymous", in_spanish(goto("/signup"), "Registrarse")),
    "login-es": ("anonymous", in_spanish(goto("/login"), "Iniciar sesión")),
    "assembly-es": ("anonymous", in_spanish(goto(f"/actors/{HANDLE}"))),
    "dashboard-es": ("facilitator", in_spanish(goto("/dashboard"), "Panel")),
    "manage-es": ("facilitator", in_spanish(goto(f"/manage/{HANDLE}"), "comunicado")),
    "compose-es": ("facilitator", in_spanish(goto(f"/manage/{HANDLE}/compose"), "Publicar")),
    "settings-es": ("facilitator", in_spanish(goto(f"/manage/{HANDLE}/settings"))),
    "facilitators-es": ("facilitator", in_spanish(goto(f"/manage/{HANDLE}/facilitators"))),
    "account-es": ("facilitator", in_spanish(goto("/account"), "Cuenta")),
    "admin-es": ("admin", in_spanish(goto("/admin"), "Administración")),
    "admin-assemblies-es": ("admin", in_spanish(goto("/admin/assemblies"))),
}


@pytest.mark.parametrize("name", SPANISH_PAGES)
def test_page_in_spanish_passes_axe_and_csp(
    spanish_auditor: Auditor, people: People, published: Published, name: str
) -> None:
    role, visit = SPANISH_PAGES[name]
    check(spanish_auditor, name, visit, role, people)
