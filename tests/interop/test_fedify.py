"""Interop: what only the Fedify peer (tests/interop/fedify-peer) checks.

Fedify (2.3.6) verifies every signature itself, signs its own requests with RFC 9421 first
(falling back to draft-cavage only when the receiver answers 4xx: the "double knock"),
embeds LD signatures and Data Integrity proofs, and writes its JSON-LD its own way:
plain-string ``to``/``cc``, nanosecond timestamps, embedded objects.

The scenarios both peers run (follow, Create/Update/Delete, replies, unfollow, mentions, our
inbox's verification of its draft-cavage and RFC 9421 signatures) are in test_scenarios.py;
every one of them ends with the double-knock check, ``FedifyCase.assert_signed_requests``
(peers.py): every request Fedify made to us was RFC 9421, accepted at the first attempt.
Here: an image attachment and a content warning, as Fedify's vocabulary parses them.

The Fedify process is shared by the session (see conftest.py). It caches remote documents
and keys by URL, so every test invocation uses an assembly handle of its own.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.datastructures import Headers, UploadFile

from server import assemblies, communiques, media
from server.config import Settings
from server.context import Context
from server.models import MediaPurpose
from tests.conftest import make_settings
from tests.helpers import approved_assembly
from tests.interop.conftest import FedifyPeer
from tests.interop.peers import FedifyCase, delivered, follow_accepted, fresh_handle
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    """The usual settings, with uploads stored under the test's own directory."""
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


async def test_image_attachment_and_content_warning_reach_fedify(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """Issue 3: a communiqué with a photo and a content warning, parsed by Fedify's vocab."""
    peer = FedifyCase(fedify)
    handle = fresh_handle("oscargrant")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, peer, handle)
    seq = (await fedify.inbox())["seq"]

    photo = io.BytesIO()
    Image.new("RGB", (160, 90), (180, 20, 20)).save(photo, "JPEG")
    photo.seek(0)
    upload = UploadFile(
        file=photo, filename="plaza.jpg", headers=Headers({"content-type": "image/jpeg"})
    )
    alt = "The plaza at dawn, tents and a banner reading 'We are the 99%'"
    async with ctx.sessions() as session, session.begin():
        stored = await media.store_upload(
            session,
            ctx.settings,
            assembly=await assemblies.get(session, handle),
            upload=upload,
            purpose=MediaPurpose.ATTACHMENT,
            alt_text=alt,
            now=ctx.clock(),
        )
        published = await communiques.publish(
            session,
            ctx.urls,
            handle=handle,
            source="Eviction threatened tonight. #OccupyOakland",
            summary="police",
            attachments=[stored],
            now=ctx.clock(),
        )
    url = media.media_url(ctx.urls, stored)

    create = await delivered(ctx, peer, "Create", seq)
    peer.assert_verified(create, ctx, handle)
    # What Fedify's parser made of the Note: a Document with our type, URL, alt text and size.
    assert create["note"] == {
        "id": published.url,
        "summary": "police",
        "sensitive": True,
        "attachments": [
            {
                "type": "Document",
                "mediaType": "image/jpeg",
                "url": url,
                "name": alt,
                "width": 160,
                "height": 90,
            }
        ],
    }, create["note"]
    # And the JSON-LD Fedify writes back out of it keeps them.
    note = create["json"]["object"]
    attachment = note["attachment"]
    attachment = attachment[0] if isinstance(attachment, list) else attachment
    assert (attachment["type"], attachment["mediaType"], attachment["url"]) == (
        "Document",
        "image/jpeg",
        url,
    )
    assert note["summary"] == "police" and note["sensitive"] is True
    assert (await fedify.inbox())["errors"] == []

    # The file is there for Fedify's users to see, served as the image it is.
    async with httpx.AsyncClient() as http:
        got = await http.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"
