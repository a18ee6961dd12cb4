"""Acceptance: requesting an assembly, its settings, its facilitators and invitations, in a
browser.

Our app runs under uvicorn on loopback; httpx clients play the people (one cookie jar
each). A refused form shows the error beside its field, keeps what was typed and leaves the
database (and the media directory) as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from server import accounts, assemblies
from server.config import Settings
from server.context import Context
from server.models import (
    Activity,
    Assembly,
    AssemblyStatus,
    Delivery,
    Follower,
    FollowerStatus,
    Invitation,
    Media,
    MediaPurpose,
    MemberRole,
    Membership,
    RemoteActor,
)
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count
from tests.helpers_web import (
    add_member,
    create_user,
    csrf_token,
    field_error,
    form_error,
    input_value,
    log_in,
    submit,
)

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"
AP_JSON = "application/activity+json"


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    """The usual test settings, with uploads stored in this test's own directory."""
    return dataclasses.replace(
        make_settings(database_url, f"http://127.0.0.1:{port}"), media_dir=tmp_path / "media"
    )


async def signed_in(
    ctx: Context, browser: Callable[[], httpx.AsyncClient], email: str
) -> httpx.AsyncClient:
    await create_user(ctx, email)
    client = browser()
    await log_in(client, email)
    return client


def png(width: int = 6, height: int = 4, colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def stored_files(settings: Settings) -> list[str]:
    if not settings.media_dir.exists():
        return []
    return sorted(p.name for p in settings.media_dir.iterdir())


async def assembly_row(ctx: Context, handle: str) -> Assembly:
    async with ctx.sessions() as session:
        return await assemblies.get(session, handle)


REQUEST = {
    "handle": "libertyplaza",
    "name": "Liberty Plaza General Assembly",
    "summary": "The people's assembly of Liberty Plaza.",
    "place": "Zuccotti Park,  New York",
    "languages": "en, es pt-BR",
    "manually_approves_followers": "on",
}


# ---- requesting an assembly --------------------------------------------------------------


async def test_a_request_waits_for_approval_on_the_dashboard(
    ctx: Context, settings: Settings, browser: Callable[[], httpx.AsyncClient]
) -> None:
    alice = await signed_in(ctx, browser, ALICE)
    empty = await alice.get("/dashboard")
    assert "You facilitate no assembly yet" in empty.text
    assert 'href="/assemblies/new"' in empty.text

    files = {
        "avatar": ("me.png", png(8, 8), "image/png"),
        "header": ("banner.png", png(30, 10, "blue"), "image/png"),
    }
    response = await submit(alice, "/assemblies/new", REQUEST, files=files)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"

    a = await assembly_row(ctx, "libertyplaza")
    assert a.status == AssemblyStatus.PENDING
    assert (a.name, a.place, a.languages) == (
        "Liberty Plaza General Assembly",
        "Zuccotti Park, New York",
        ["en", "es", "pt-BR"],
    )
    assert a.manually_approves_followers is True
    async with ctx.sessions() as session:
        member = (await session.scalars(select(Membership))).one()
        stored = (await session.scalars(select(Media).order_by(Media.id))).all()
    assert a.requested_by_id == member.user_id
    assert (member.assembly_id, member.role) == (a.id, MemberRole.ADMIN)
    assert [m.purpose for m in stored] == [MediaPurpose.AVATAR, MediaPurpose.HEADER]
    assert a.icon_url == f"{settings.base_url}/media/{stored[0].file_name}"
    assert a.header_url == f"{settings.base_url}/media/{stored[1].file_name}"
    assert stored_files(settings) == sorted(m.file_name for m in stored)

    dashboard = await alice.get("/dashboard")
    assert "An administrator of this instance must approve it" in dashboard.text  # flash
    assert "Liberty Plaza General Assembly" in dashboard.text
    assert '<span class="badge pending">pending</span>' in dashboard.text
    assert 'href="/manage/libertyplaza"' not in dashboard.text
    assert 'href="/manage/libertyplaza/settings"' in dashboard.text

    # Approved: the way to its communiqués appears.
    async with ctx.sessions() as session, session.begin():
        await assemblies.approve(session, "libertyplaza", now=ctx.clock())
    dashboard = await alice.get("/dashboard")
    assert '<span class="badge approved">approved</span>' in dashboard.text
    assert 'href="/manage/libertyplaza"' in dashboard.text

    # Another request, turned down: the reason is shown.
    second = {**REQUEST, "handle": "tahrir", "name": "Tahrir Square Assembly"}
    assert (await submit(alice, "/assemblies/new", second)).status_code == 303
    async with ctx.sessions() as session, session.begin():
        await assemblies.reject(
            session, "tahrir", reason="Please describe where you meet.", now=ctx.clock()
        )
    dashboard = await alice.get("/dashboard")
    assert '<span class="badge rejected">rejected</span>' in dashboard.text
    assert "Please describe where you meet." in dashboard.text


async def test_a_refused_request_keeps_what_was_typed_and_stores_nothing(
    ctx: Context, settings: Settings, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "taken", name="Already Here")
    alice = await signed_in(ctx, browser, ALICE)
    before = await count(ctx, Assembly), await count(ctx, Membership), await count(ctx, Media)

    cases: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
        ({"handle": "Bad Handle!"}, {}, "handle", "invalid handle"),
        ({"handle": "taken"}, {}, "handle", "already exists"),
        ({"handle": "admin"}, {}, "handle", "reserved"),
        ({"name": "   "}, {}, "name", "needs a name"),
        ({"languages": "en, english"}, {}, "languages", "not a language code"),
        ({"languages": " ".join(f"l{c}{c}" for c in "abcdefghijk")}, {}, "languages", "at most"),
        ({"place": "x" * 201}, {}, "place", "at most 200"),
        ({}, {"avatar": ("me.png", b"not an image", "image/png")}, "avatar", "is not"),
        # A good avatar, then a bad header: the avatar's file goes too.
        (
            {},
            {
                "avatar": ("me.png", png(), "image/png"),
                "header": ("x.gif", b"GIF89a nonsense", "image/gif"),
            },
            "header",
            "is not",
        ),
    ]
    for changes, files, name, says in cases:
        typed = {**REQUEST, **changes}
        response = await submit(alice, "/assemblies/new", typed, files=files or None)
        assert response.status_code in {400, 409}, (changes, response.status_code)
        error = field_error(response.text, name) or ""
        assert says in error, (changes, error, form_error(response.text))
        for other in ("handle", "name", "place", "languages"):
            assert input_value(response.text, other) == typed[other], other
        assert input_value(response.text, "summary") == typed["summary"]
        assert 'name="manually_approves_followers" type="checkbox" checked' in response.text
        assert before == (
            await count(ctx, Assembly),
            await count(ctx, Membership),
            await count(ctx, Media),
        ), changes
        assert stored_files(settings) == [], changes


async def test_a_request_without_our_csrf_token_stores_nothing(
    ctx: Context, settings: Settings, browser: Callable[[], httpx.AsyncClient]
) -> None:
    alice = await signed_in(ctx, browser, ALICE)
    files = {"avatar": ("me.png", png(), "image/png")}
    response = await alice.post("/assemblies/new", data=REQUEST, files=files)
    assert response.status_code == 403
    other = browser()
    token = csrf_token((await other.get("/login")).text)
    response = await alice.post(
        "/assemblies/new", data={**REQUEST, "csrf_token": token}, files=files
    )
    assert response.status_code == 403
    assert await count(ctx, Assembly) == 0 and await count(ctx, Media) == 0
    assert stored_files(settings) == []


async def test_request_needs_a_login(browser: Callable[[], httpx.AsyncClient]) -> None:
    response = await browser().get("/assemblies/new")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/assemblies/new"


# ---- settings ----------------------------------------------------------------------------


async def follower(ctx: Context, handle: str, n: int, *, shared: str | None = None) -> None:
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        actor = RemoteActor(
            uri=f"https://social{n}.example/users/u{n}",
            domain=f"social{n}.example",
            inbox_uri=f"https://social{n}.example/users/u{n}/inbox",
            shared_inbox_uri=shared,
        )
        session.add(actor)
        await session.flush()
        session.add(
            Follower(
                assembly_id=assembly.id,
                actor_id=actor.id,
                follow_uri=f"https://social{n}.example/follows/{n}",
                status=FollowerStatus.ACCEPTED,
            )
        )


async def test_only_the_assemblys_admins_change_its_settings(
    ctx: Context, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza GA")
    alice = await signed_in(ctx, browser, ALICE)
    bob = await signed_in(ctx, browser, BOB)
    carol = await signed_in(ctx, browser, CAROL)
    await add_member(ctx, await user_id(ctx, ALICE), "libertyplaza", MemberRole.ADMIN)
    await add_member(ctx, await user_id(ctx, BOB), "libertyplaza")  # a facilitator

    assert (await alice.get("/manage/libertyplaza/settings")).status_code == 200
    for outsider, says in ((bob, "admins may"), (carol, "not a facilitator")):
        page = await outsider.get("/manage/libertyplaza/settings", headers={"Accept": "text/html"})
        assert page.status_code == 403
        assert says in html.unescape(page.text)
        token = csrf_token(page.text)
        response = await outsider.post(
            "/manage/libertyplaza/settings",
            data={"csrf_token": token, "name": "Taken over", "languages": "en"},
        )
        assert response.status_code == 403
    assert (await alice.get("/manage/nosuchassembly/settings")).status_code == 404
    assert (await assembly_row(ctx, "libertyplaza")).name == "Liberty Plaza GA"
    assert await count(ctx, Activity) == 0

    anonymous = await browser().get("/manage/libertyplaza/settings")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=/manage/libertyplaza/settings"


async def user_id(ctx: Context, email: str) -> int:
    async with ctx.sessions() as session:
        user = await accounts.find_by_email(session, email)
        assert user is not None
        return user.id


async def test_a_profile_edit_is_sent_to_followers(
    ctx: Context, settings: Settings, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza GA")
    for n in (1, 2):  # two people on one server with a shared inbox: one delivery there
        await follower(ctx, "libertyplaza", n, shared="https://social.example/inbox")
    await follower(ctx, "libertyplaza", 3)
    alice = await signed_in(ctx, browser, ALICE)
    await add_member(ctx, await user_id(ctx, ALICE), "libertyplaza", MemberRole.ADMIN)

    page = await alice.get("/manage/libertyplaza/settings")
    assert input_value(page.text, "name") == "Liberty Plaza GA"
    form = {
        "csrf_token": csrf_token(page.text),
        "name": "Liberty Plaza General Assembly",
        "summary": "Every evening at 7.",
        "place": "Zuccotti Park",
        "languages": "en es",
    }
    files = {"header": ("banner.png", png(30, 10), "image/png")}
    response = await alice.post("/manage/libertyplaza/settings", data=form, files=files)
    assert response.status_code == 303, response.text
    assert "sent the new profile" in (await alice.get("/dashboard")).text

    async with ctx.sessions() as session:
        activity = (await session.scalars(select(Activity))).one()
        inboxes = sorted((await session.scalars(select(Delivery.inbox_uri))).all())
    assert activity.type == "Update"
    actor = activity.document["object"]
    assert actor["type"] == "Group"
    assert actor["id"] == f"{settings.base_url}/actors/libertyplaza"
    assert actor["name"] == "Liberty Plaza General Assembly"
    assert actor["image"]["url"].startswith(f"{settings.base_url}/media/")
    assert "@context" in activity.document and "@context" not in actor
    assert activity.document["cc"] == [f"{settings.base_url}/actors/libertyplaza/followers"]
    assert inboxes == [
        "https://social.example/inbox",
        "https://social3.example/users/u3/inbox",
    ]
    # What the actor URL now serves is what followers were sent.
    served = await alice.get("/actors/libertyplaza", headers={"Accept": AP_JSON})
    document = json.loads(served.content)
    assert {k: v for k, v in document.items() if k != "@context"} == actor

    # Saving without a change sends nothing more.
    page = await alice.get("/manage/libertyplaza/settings")
    same = {**form, "csrf_token": csrf_token(page.text)}
    assert (await alice.post("/manage/libertyplaza/settings", data=same)).status_code == 303
    assert await count(ctx, Activity) == 1

    # A new header replaces the old one, file and all.
    old_files = stored_files(settings)
    files = {"header": ("banner2.png", png(30, 10, "green"), "image/png")}
    response = await alice.post("/manage/libertyplaza/settings", data=same, files=files)
    assert response.status_code == 303
    assert await count(ctx, Activity) == 2
    assert await count(ctx, Media) == 1
    assert len(stored_files(settings)) == 1 and stored_files(settings) != old_files

    # A refused edit: the error beside its field, nothing saved, nothing sent.
    page = await alice.get("/manage/libertyplaza/settings")
    bad = {**form, "csrf_token": csrf_token(page.text), "name": "Renamed", "languages": "xx-!"}
    response = await alice.post("/manage/libertyplaza/settings", data=bad)
    assert response.status_code == 400
    assert "not a language code" in (field_error(response.text, "languages") or "")
    assert input_value(response.text, "name") == "Renamed"
    assert (await assembly_row(ctx, "libertyplaza")).name == "Liberty Plaza General Assembly"
    assert await count(ctx, Activity) == 2


async def test_a_pending_assembly_is_edited_without_federating(
    ctx: Context, browser: Callable[[], httpx.AsyncClient]
) -> None:
    alice = await signed_in(ctx, browser, ALICE)
    assert (await submit(alice, "/assemblies/new", REQUEST)).status_code == 303
    edit = {**REQUEST, "name": "Liberty Plaza GA", "languages": "en"}
    edit.pop("handle")
    response = await submit(alice, "/manage/libertyplaza/settings", edit)
    assert response.status_code == 303
    a = await assembly_row(ctx, "libertyplaza")
    assert (a.name, a.languages) == ("Liberty Plaza GA", ["en"])
    assert await count(ctx, Activity) == 0


# ---- facilitators and invitations --------------------------------------------------------


LINK_RE = re.compile(r'id="invitation-link"[^>]*value="([^"]+)"')


async def invite(client: httpx.AsyncClient, email: str, role: str = "facilitator") -> str:
    """Invite ``email``; returns the link's path (shown once on the page)."""
    data = {"email": email, "role": role}
    response = await submit(client, "/manage/libertyplaza/facilitators", data)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "only this once" in response.text
    assert f"send the invitation link to {email} yourself" in response.text
    found = LINK_RE.search(response.text)
    assert found, response.text
    return httpx.URL(found.group(1)).path


async def test_invitations_make_facilitators(
    ctx: Context, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza GA")
    alice = await signed_in(ctx, browser, ALICE)
    bob = await signed_in(ctx, browser, BOB)  # has an account already
    carol = await signed_in(ctx, browser, CAROL)
    await add_member(ctx, await user_id(ctx, ALICE), "libertyplaza", MemberRole.ADMIN)

    path = await invite(alice, BOB)
    token = path.rsplit("/", 1)[1]
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Invitation))).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (row.email, row.role, row.accepted_at) == (BOB, MemberRole.FACILITATOR, None)
    # Shown once: the list shows the invitation, not its link.
    page = await alice.get("/manage/libertyplaza/facilitators")
    assert token not in page.text and BOB in page.text

    # Bob finds it on his dashboard too.
    dashboard = await bob.get("/dashboard")
    assert "You are invited to facilitate" in dashboard.text
    assert f'action="/dashboard/invitations/{row.id}/accept"' in dashboard.text

    # Anyone with the link sees what it is; only Bob may accept it.
    anonymous = await browser().get(path)
    assert anonymous.status_code == 200
    assert f'href="/login?next={path}"' in anonymous.text
    wrong = await carol.get(path)
    assert wrong.status_code == 403
    assert f"this invitation is for {BOB}" in wrong.text
    response = await carol.post(path, data={"csrf_token": csrf_token(wrong.text)})
    assert response.status_code == 403
    assert await count(ctx, Membership) == 1

    page = await bob.get(path)
    assert page.status_code == 200
    response = await bob.post(path, data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    dashboard = await bob.get("/dashboard")
    assert "You are now a facilitator of Liberty Plaza GA" in dashboard.text
    assert "You are invited" not in dashboard.text
    assert 'href="/manage/libertyplaza/facilitators"' in dashboard.text

    # A used link, or a made-up one, leads nowhere.
    used = await bob.post(path, data={"csrf_token": csrf_token(page.text)})
    assert used.status_code == 404
    assert (await bob.get(path)).status_code == 404
    assert (await bob.get("/invitations/made-up-token")).status_code == 404
    assert await count(ctx, Membership) == 2

    # Bob may see the list, not change it.
    listing = await bob.get("/manage/libertyplaza/facilitators")
    assert listing.status_code == 200
    assert ALICE in listing.text and "Only this assembly's admins" in listing.text
    refused = await bob.post(
        "/manage/libertyplaza/facilitators",
        data={"csrf_token": csrf_token(listing.text), "email": CAROL, "role": "admin"},
    )
    assert refused.status_code == 403
    assert (await carol.get("/manage/libertyplaza/facilitators")).status_code == 403

    # Carol, invited as an admin, accepts from her dashboard.
    await invite(alice, CAROL, "admin")
    dashboard = await carol.get("/dashboard")
    async with ctx.sessions() as session:
        carols = (await session.scalars(select(Invitation).where(Invitation.email == CAROL))).one()
    response = await carol.post(
        f"/dashboard/invitations/{carols.id}/accept",
        data={"csrf_token": csrf_token(dashboard.text)},
    )
    assert response.status_code == 303
    async with ctx.sessions() as session:
        roles = dict(
            (
                await session.execute(
                    select(Membership.user_id, Membership.role).order_by(Membership.id)
                )
            ).all()
        )
    assert roles == {
        await user_id(ctx, ALICE): MemberRole.ADMIN,
        await user_id(ctx, BOB): MemberRole.FACILITATOR,
        await user_id(ctx, CAROL): MemberRole.ADMIN,
    }


async def test_invitation_mistakes_are_shown_beside_the_field(
    ctx: Context, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    alice = await signed_in(ctx, browser, ALICE)
    await add_member(ctx, await user_id(ctx, ALICE), "libertyplaza", MemberRole.ADMIN)
    for data, name, says in [
        ({"email": "not-an-address", "role": "facilitator"}, "email", "e-mail address"),
        ({"email": ALICE, "role": "facilitator"}, "email", "already facilitates"),
        ({"email": BOB, "role": "owner"}, "role", "facilitator or admin"),
    ]:
        response = await submit(alice, "/manage/libertyplaza/facilitators", data)
        assert response.status_code in {400, 409}
        assert says in (field_error(response.text, name) or ""), data
        assert input_value(response.text, "email") == data["email"]
    assert await count(ctx, Invitation) == 0

    # Someone who signs up for an invited address later needs the link itself.
    await invite(alice, BOB)
    bob = await signed_in(ctx, browser, BOB)
    assert "You are invited" not in (await bob.get("/dashboard")).text
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Invitation))).one()
    response = await bob.post(
        f"/dashboard/invitations/{row.id}/accept",
        data={"csrf_token": csrf_token((await bob.get("/dashboard")).text)},
    )
    assert response.status_code == 404
    assert await count(ctx, Membership) == 1

    # Inviting again replaces the first link; withdrawing ends the second.
    first = await invite(alice, BOB)
    second = await invite(alice, BOB)
    assert (await bob.get(first)).status_code == 404
    assert (await bob.get(second)).status_code == 200
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Invitation))).one()
    response = await submit(
        alice,
        "/manage/libertyplaza/facilitators",
        action=f"/manage/libertyplaza/invitations/{row.id}/withdraw",
    )
    assert response.status_code == 303
    assert (await bob.get(second)).status_code == 404


async def test_an_assembly_never_loses_its_last_admin(
    ctx: Context, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    alice = await signed_in(ctx, browser, ALICE)
    bob = await signed_in(ctx, browser, BOB)
    await add_member(ctx, await user_id(ctx, ALICE), "libertyplaza", MemberRole.ADMIN)
    await add_member(ctx, await user_id(ctx, BOB), "libertyplaza")
    async with ctx.sessions() as session:
        ids = dict((await session.execute(select(Membership.user_id, Membership.id))).all())
    mine, bobs = ids[await user_id(ctx, ALICE)], ids[await user_id(ctx, BOB)]
    base = "/manage/libertyplaza/facilitators"

    for action, data in (
        (f"{base}/{mine}/remove", {}),
        (f"{base}/{mine}/role", {"role": "facilitator"}),
    ):
        response = await submit(alice, base, data, action=action)
        assert response.status_code == 409
        assert "at least one admin" in (form_error(response.text) or "")
    assert await count(ctx, Membership, Membership.role == MemberRole.ADMIN) == 1

    # A facilitator cannot remove anyone.
    response = await submit(bob, base, action=f"{base}/{mine}/remove")
    assert response.status_code == 403

    # Make Bob admin; then Alice may step down and leave.
    response = await submit(alice, base, {"role": "admin"}, action=f"{base}/{bobs}/role")
    assert response.status_code == 303
    response = await submit(alice, base, action=f"{base}/{mine}/remove")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    assert (await alice.get(base)).status_code == 403
    async with ctx.sessions() as session:
        left = (await session.execute(select(Membership.id, Membership.role))).all()
    assert [tuple(r) for r in left] == [(bobs, MemberRole.ADMIN)]
    response = await submit(bob, base, action=f"{base}/{bobs}/remove")
    assert response.status_code == 409
