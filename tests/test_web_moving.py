"""Acceptance: an assembly's other identities (aliases) and its move, from its settings page.

Our app runs under uvicorn on loopback; httpx clients play the people. Both identities are
assemblies of this instance (``@name@<our host>``), which need no network. A refused form
shows the reason beside its field and changes nothing; a move leaves the old identity
pointing at the new one, in its actor document, its public page and its composer.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from server import assemblies, moving
from server.context import Context
from server.models import (
    Activity,
    Communique,
    Delivery,
    Follower,
    FollowerStatus,
    MemberRole,
    RemoteActor,
)
from tests.helpers import approved_assembly, count
from tests.helpers_web import (
    add_member,
    create_user,
    csrf_token,
    field_error,
    form_error,
    log_in,
    submit,
)
from tests.test_web_assemblies import assembly_row, signed_in, user_id

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"  # an admin of libertyplaza
BOB = "bob@example.org"  # an admin of plazaexile
ROOT = "root@example.org"  # an administrator of the instance, in no assembly
OLD, NEW = "libertyplaza", "plazaexile"
SETTINGS = f"/manage/{OLD}/settings"
AP_JSON = "application/activity+json"
FOLLOWER_INBOX = "https://social.example/users/ana/inbox"


@pytest.fixture
async def alice(ctx: Context, browser: Callable[[], httpx.AsyncClient]) -> httpx.AsyncClient:
    """Two approved assemblies of this instance; Alice administers the old one."""
    await approved_assembly(ctx, OLD, name="Liberty Plaza GA")
    await approved_assembly(ctx, NEW, name="Liberty Plaza GA (in exile)")
    client = await signed_in(ctx, browser, ALICE)
    await add_member(ctx, await user_id(ctx, ALICE), OLD, MemberRole.ADMIN)
    return client


async def actor(client: httpx.AsyncClient, handle: str) -> dict[str, object]:
    response = await client.get(f"/actors/{handle}", headers={"Accept": AP_JSON})
    assert response.status_code == 200
    document: dict[str, object] = json.loads(response.content)
    return document


async def follower(ctx: Context, handle: str) -> None:
    """A remote account that follows ``handle``."""
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        person = RemoteActor(
            uri="https://social.example/users/ana",
            domain="social.example",
            inbox_uri=FOLLOWER_INBOX,
        )
        session.add(person)
        await session.flush()
        session.add(
            Follower(
                assembly_id=assembly.id,
                actor_id=person.id,
                follow_uri="https://social.example/follows/1",
                status=FollowerStatus.ACCEPTED,
            )
        )


async def names_back(ctx: Context) -> None:
    """The new identity lists the old one among its aliases."""
    async with ctx.sessions() as session, session.begin():
        await moving.add_alias(session, ctx, handle=NEW, target=f"@{OLD}@{ctx.urls.host}")


def text_of(page: httpx.Response) -> str:
    return html.unescape(page.text)


async def test_an_alias_is_added_listed_and_removed(ctx: Context, alice: httpx.AsyncClient) -> None:
    new_uri = ctx.urls.actor(NEW)
    page = await alice.get(SETTINGS)
    assert "Other identities (aliases)" in page.text
    assert "each identity must name the other" in page.text
    assert "No other identity yet." in page.text

    response = await submit(
        alice, SETTINGS, {"alias": f"@{NEW}@{ctx.urls.host}"}, action=f"/manage/{OLD}/aliases"
    )
    assert response.status_code == 303
    assert response.headers["location"] == SETTINGS
    page = await alice.get(SETTINGS)
    assert f"{new_uri} is now an alias of this assembly." in text_of(page)
    assert f'<a href="{new_uri}"' in page.text
    assert (await actor(alice, OLD))["alsoKnownAs"] == [new_uri]
    assert (await assembly_row(ctx, OLD)).also_known_as == [new_uri]
    # Followers' servers are sent the actor as it now is.
    update = (await ctx_activities(ctx, "Update"))[-1]
    assert update.document["object"]["alsoKnownAs"] == [new_uri]

    # The same identity again, by its URL this time: refused beside the field.
    response = await submit(alice, SETTINGS, {"alias": new_uri}, action=f"/manage/{OLD}/aliases")
    assert response.status_code == 409
    assert "already an alias" in (field_error(response.text, "alias") or "")
    # Neither a handle nor a URL; an assembly that does not exist; itself.
    for typed, says in (
        ("not a handle", "neither a handle"),
        (f"@nosuchassembly@{ctx.urls.host}", "no assembly @nosuchassembly"),
        (f"@{OLD}@{ctx.urls.host}", "not an alias of itself"),
    ):
        response = await submit(alice, SETTINGS, {"alias": typed}, action=f"/manage/{OLD}/aliases")
        assert response.status_code == 400, typed
        assert says in (field_error(response.text, "alias") or ""), response.text
    assert (await assembly_row(ctx, OLD)).also_known_as == [new_uri]

    response = await submit(
        alice, SETTINGS, {"alias": new_uri}, action=f"/manage/{OLD}/aliases/remove"
    )
    assert response.status_code == 303
    page = await alice.get(SETTINGS)
    assert f"{new_uri} is no longer an alias of this assembly." in text_of(page)
    assert "No other identity yet." in page.text
    assert "alsoKnownAs" not in await actor(alice, OLD)
    assert (await assembly_row(ctx, OLD)).also_known_as == []

    # Removing it again: the reason above the list, nothing else happens.
    before = await count(ctx, Activity)
    response = await submit(
        alice, SETTINGS, {"alias": new_uri}, action=f"/manage/{OLD}/aliases/remove"
    )
    assert response.status_code == 404
    assert "is not an alias" in (form_error(response.text) or "")
    assert await count(ctx, Activity) == before


async def ctx_activities(ctx: Context, kind: str) -> list[Activity]:
    async with ctx.sessions() as session:
        query = select(Activity).where(Activity.type == kind).order_by(Activity.id)
        return list((await session.scalars(query)).all())


async def test_a_move_is_refused_until_the_target_names_this_assembly(
    ctx: Context, alice: httpx.AsyncClient
) -> None:
    await follower(ctx, OLD)
    target = f"@{NEW}@{ctx.urls.host}"
    response = await submit(
        alice, SETTINGS, {"target": target, "confirm": "on"}, action=f"/manage/{OLD}/move"
    )
    assert response.status_code == 400
    error = field_error(response.text, "target") or ""
    assert f"{ctx.urls.actor(NEW)} does not list {ctx.urls.actor(OLD)}" in error
    assert "add this assembly as an alias there first" in error
    assert 'value="@plazaexile@' in response.text  # what was typed stays
    old = await assembly_row(ctx, OLD)
    assert (old.moved_to, old.moved_at, old.also_known_as) == (None, None, [])
    assert await count(ctx, Activity) == 0 and await count(ctx, Delivery) == 0
    assert "movedTo" not in await actor(alice, OLD)


async def test_a_move_between_two_assemblies_of_this_instance(
    ctx: Context, alice: httpx.AsyncClient, browser: Callable[[], httpx.AsyncClient]
) -> None:
    old_uri, new_uri = ctx.urls.actor(OLD), ctx.urls.actor(NEW)
    await follower(ctx, OLD)
    # Bob, an admin of the new identity, names the old one there first.
    bob = await signed_in(ctx, browser, BOB)
    await add_member(ctx, await user_id(ctx, BOB), NEW, MemberRole.ADMIN)
    response = await submit(
        bob,
        f"/manage/{NEW}/settings",
        {"alias": f"@{OLD}@{ctx.urls.host}"},
        action=f"/manage/{NEW}/aliases",
    )
    assert response.status_code == 303
    assert (await actor(bob, NEW))["alsoKnownAs"] == [old_uri]

    response = await submit(
        alice,
        SETTINGS,
        {"target": f"@{NEW}@{ctx.urls.host}", "confirm": "on"},
        action=f"/manage/{OLD}/move",
    )
    assert response.status_code == 303, response.text
    page = await alice.get(SETTINGS)
    assert f"This assembly has moved to {new_uri}" in text_of(page)
    old = await assembly_row(ctx, OLD)
    assert old.moved_to == new_uri and old.moved_at is not None
    assert f'Moved to <a href="{new_uri}"' in page.text
    assert f'on <time datetime="{old.moved_at:%Y-%m-%dT%H:%M:%SZ}">' in page.text
    assert 'action="/manage/libertyplaza/move"' not in page.text  # no second move

    # The Move goes to the follower's inbox; the actor says where the assembly went.
    [move] = await ctx_activities(ctx, "Move")
    assert move.document["object"] == old_uri and move.document["target"] == new_uri
    async with ctx.sessions() as session:
        inboxes = (
            await session.scalars(select(Delivery.inbox_uri).where(Delivery.activity_id == move.id))
        ).all()
    assert inboxes == [FOLLOWER_INBOX]
    document = await actor(alice, OLD)
    assert document["movedTo"] == new_uri and document["alsoKnownAs"] == [new_uri]
    public = await browser().get(f"/actors/{OLD}", headers={"Accept": "text/html"})
    assert "This assembly has moved" in public.text and new_uri in public.text

    # The management page and the composer say so; publishing is refused on the page.
    manage = await alice.get(f"/manage/{OLD}")
    assert "This assembly moved to" in text_of(manage)
    assert f'href="/manage/{OLD}/compose">Write a communiqué</a></p>' not in manage.text
    compose = await alice.get(f"/manage/{OLD}/compose")
    assert compose.status_code == 200
    assert "has moved to" in (form_error(compose.text) or "")
    assert 'value="publish"' not in compose.text and 'value="preview"' in compose.text
    response = await submit(
        alice,
        f"/manage/{OLD}/compose",
        {"content": "Still here?", "language": "en", "action": "publish"},
    )
    assert response.status_code == 409
    assert f"has moved to {new_uri}" in (form_error(response.text) or "")
    assert "Still here?" in response.text  # the draft is kept
    assert await count(ctx, Communique) == 0

    # A second move is refused: the assembly no longer publishes anything, not even a Move.
    response = await alice.post(
        f"/manage/{OLD}/move",
        data={
            "csrf_token": csrf_token(page.text),
            "target": f"@{NEW}@{ctx.urls.host}",
            "confirm": "on",
        },
    )
    assert response.status_code == 409
    assert "has moved" in (form_error(response.text) or "")
    assert len(await ctx_activities(ctx, "Move")) == 1


async def test_an_instance_administrator_may_move_but_not_edit_the_profile(
    ctx: Context, alice: httpx.AsyncClient, browser: Callable[[], httpx.AsyncClient]
) -> None:
    await create_user(ctx, ROOT, is_admin=True)
    root = browser()
    await log_in(root, ROOT)
    page = await root.get(SETTINGS)
    assert page.status_code == 200
    assert "Only this assembly's admins edit its profile" in text_of(page)
    assert 'name="summary"' not in page.text  # no profile form
    assert f'href="/manage/{OLD}/facilitators"' not in page.text  # no members' tabs
    response = await submit(
        root, SETTINGS, {"alias": f"@{NEW}@{ctx.urls.host}"}, action=f"/manage/{OLD}/aliases"
    )
    assert response.status_code == 303
    assert (await assembly_row(ctx, OLD)).also_known_as == [ctx.urls.actor(NEW)]
    response = await submit(root, SETTINGS, {"name": "Taken over", "languages": "en"})
    assert response.status_code == 403
    assert (await assembly_row(ctx, OLD)).name == "Liberty Plaza GA"
