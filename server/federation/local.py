"""Deliveries to an inbox of this instance, handed to the inbox pipeline in-process.

An assembly following another assembly of the same instance, a letter between two of them, a
co-signature: the worker would POST to our own address, which the private-address guard
refuses when the instance runs on a private network (and which would cost a round trip
through the proxy otherwise). The request is signed as it would be for the network and then
goes through the very checks an HTTP POST meets (size, signature, key ↔ actor, structure,
dedupe) before it is queued; only the transport is skipped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.datastructures import Headers

from server.activitypub.signatures import PrivateKey, sign_request
from server.activitypub.vocab import AS2_MEDIA_TYPE
from server.context import Context
from server.errors import InterOccError
from server.federation import inbox, inbox_queue
from server.federation.cache import Memo
from server.urls import ACTOR_INBOX, SHARED_INBOX

_ACTOR_INBOX = re.compile("^" + re.escape(ACTOR_INBOX).replace(r"\{handle\}", "([^/]+)") + "$")


def inbox_handle(path: str) -> tuple[bool, str | None]:
    """(is an inbox, the assembly's handle or None for the shared inbox)."""
    if path == SHARED_INBOX:
        return True, None
    found = _ACTOR_INBOX.match(path)
    return (True, found.group(1)) if found else (False, None)


async def deliver(
    ctx: Context,
    inbox_uri: str,
    body: bytes,
    *,
    key_id: str,
    private_key: PrivateKey,
    memo: Memo[Any],
    now: datetime,
) -> tuple[int, str | None]:
    """(HTTP status the inbox would answer, error or None). Never raises for bad input."""
    path = ctx.urls.local_path(inbox_uri)
    is_inbox, handle = inbox_handle(path or "")
    if path is None or not is_inbox:
        return 404, "no such inbox on this instance"
    if len(body) > ctx.settings.max_body_bytes:
        return 413, f"body larger than {ctx.settings.max_body_bytes} bytes"
    headers = {"Content-Type": AS2_MEDIA_TYPE}
    headers |= sign_request(
        "POST", inbox_uri, headers, body, key_id=key_id, private_key=private_key, now=now
    )
    try:
        signed = await inbox.authenticate(
            ctx,
            method="POST",
            target=path,
            headers=Headers(headers=headers),
            body=body,
            inbox_handle=handle,
            memo=memo,
        )
        if signed.owner_uri is not None:
            await inbox_queue.enqueue(ctx, signed, inbox_handle=handle)
    except InterOccError as exc:
        return exc.status, exc.message
    return 202, None
