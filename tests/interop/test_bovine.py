"""Interop: what only the bovine peer (tests/interop/bovine-peer) checks.

bovine 0.5.19 (Helge's Python ActivityPub library, from PyPI) is a second implementation we
did not write: the peer signs every request and verifies every delivery with bovine's own
code (``BovineActor``/``SignedHttpClient`` and ``SignatureChecker``), resolves handles with
bovine's WebFinger client and builds its activities with bovine's factories.

The scenarios both peers run are in test_scenarios.py (``BovineCase`` in peers.py holds what
is bovine's own in them): follow by handle → Accept; Create/Update/Delete; bovine replies,
edits, likes, announces and deletes its reply; unfollow; a mention without a follow; our
inbox verifies bovine's signatures with ``Digest: sha-256=`` (its default) and ``SHA-256=``,
and refuses a wrong digest or none. Here: bovine's third digest method, an RFC 9530
``Content-Digest`` instead of ``Digest`` in its draft-cavage signature
(``digest_method=content_digest_sha256_rfc_9530``); our verifier accepts either and checks
whichever is covered.

What bovine cannot do, and so is not run with it:

- **Sign with RFC 9421.** bovine signs only draft-cavage (``rsa-sha256`` over
  ``(request-target) host date`` + ``accept`` for GET, + digest and ``content-type`` for
  POST); its RFC 9421 support is verification only ("in development", per its
  ``RFC9421Signature`` docstring). Our RFC 9421 verifier is exercised by the Fedify peer.
- **Shared inboxes.** bovine's actor model has no ``endpoints.sharedInbox`` and its clients
  deliver to each actor's ``inbox``, so the peer advertises none and we deliver to alice's
  own inbox.
- **Handle incoming Follows.** Side effects live in bovine-process/bovine-herd, not in the
  bovine library; the peer records a Follow sent to it but does not answer it. Assemblies
  never follow anyone, so no scenario needs it.

How bovine differs from Fedify on the wire, which the scenarios pin down: the Digest prefix
is lower case ``sha-256=`` by default, the signature also covers ``content-type``; ``Undo``
and ``Delete`` name their object by id instead of embedding it; a reply carries ``to`` the
author and the original's audience in ``cc``; timestamps are whole seconds (``…:42Z``);
signed GETs send ``Accept: application/activity+json`` and sign it. bovine's verifier
accepts a Date at most five minutes off and computes ``(request-target)`` from the path
without the query.
"""

from __future__ import annotations

import pytest

from server.context import Context
from server.models import Follower
from tests.helpers import approved_assembly
from tests.interop.conftest import BovinePeer
from tests.interop.peers import fresh_handle, settled_count
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


async def test_inbox_accepts_bovine_rfc9530_content_digest(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    """bovine's third digest method: ``Content-Digest: sha-256=:…:`` covered instead of Digest.

    ``BovineActor(digest_method=content_digest_sha256_rfc_9530)`` is a documented bovine
    option, and bovine's own verifier takes either header in a draft-cavage signature.
    """
    handle = fresh_handle("oakland_rfc9530")
    await approved_assembly(ctx, handle)
    follow = {"type": "Follow", "object": ctx.urls.actor(handle)}
    sent = await bovine.send(ctx.urls.inbox(handle), follow, digest="content-digest")
    (request,) = [e for e in (await bovine.inbox())["outgoing"] if e["method"] == "POST"]
    assert request["signedHeaders"] == [
        "(request-target)",
        "host",
        "date",
        "content-digest",
        "content-type",
    ]
    assert request["digest"] is None and request["contentDigest"].startswith("sha-256=:")
    assert sent["status"] == 202, sent
    await settled_count(ctx, 1, Follower)
