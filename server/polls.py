"""Straw polls: a communiqué published as a Question; votes are tallied one per actor.

A vote is what Mastodon sends: a Create{Note} whose ``name`` is one of the choices and whose
``inReplyTo`` is the Question, addressed to the poll's author. A second vote by the same
actor is ignored; a vote after the closing time is refused (4xx, nothing stored). When the
poll closes, the worker sends an Update with the final tally to followers and voters.

Stored in Communique.poll::

    {"choices": ["Yes", "No"], "closes_at": "2026-12-01T18:00:00Z",
     "counts": {"Yes": 3, "No": 1}, "voters": 4}
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub.jsonld import as_list
from server.activitypub.vocab import iso
from server.errors import BadRequest, Forbidden
from server.models import Communique, PollVote

MAX_CHOICES = 10
MAX_CHOICE = 100
# A remote poll may offer more than ours (Pleroma's default is 20, Misskey's 10, Mastodon's 4);
# one offering more is refused whole, not cut short: a shortened poll would misreport it.
MAX_REMOTE_CHOICES = 20
MIN_DURATION = timedelta(minutes=5)
MAX_DURATION = timedelta(days=30)

Doc = dict[str, Any]


def validate(choices_text: str, hours: str, *, now: datetime) -> dict[str, Any] | None:
    """A poll from the composer's fields (one choice per line, duration in hours); None if
    no choice was written."""
    choices = list(dict.fromkeys(c.strip() for c in choices_text.splitlines() if c.strip()))
    if not choices:
        return None
    if len(choices) < 2:
        raise BadRequest("a poll needs at least two choices", field="poll_choices")
    if len(choices) > MAX_CHOICES:
        raise BadRequest(f"a poll has at most {MAX_CHOICES} choices", field="poll_choices")
    if any(len(c) > MAX_CHOICE for c in choices):
        raise BadRequest(f"a choice is at most {MAX_CHOICE} characters", field="poll_choices")
    try:
        duration = timedelta(hours=float(hours or "24"))
    except ValueError:
        raise BadRequest("give the poll's duration in hours", field="poll_hours") from None
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise BadRequest("a poll lasts between 5 minutes and 30 days", field="poll_hours")
    return {
        "choices": choices,
        "closes_at": iso(now + duration),
        "counts": dict.fromkeys(choices, 0),
        "voters": 0,
    }


def check_remote_choices(note: Doc) -> None:
    """Refuse a remote post (a Question, or anything carrying its properties) with more than
    MAX_REMOTE_CHOICES choices: the activity is answered 400 and nothing of it is kept."""
    for key in ("oneOf", "anyOf"):
        count = len(as_list(note.get(key)))
        if count > MAX_REMOTE_CHOICES:
            raise BadRequest(
                f"a poll has at most {MAX_REMOTE_CHOICES} choices, this one has {count}"
            )


def closes_at(poll: dict[str, Any]) -> datetime:
    return datetime.strptime(str(poll["closes_at"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def is_closed(communique: Communique, now: datetime) -> bool:
    poll = communique.poll
    return bool(poll) and (communique.poll_closed_at is not None or now >= closes_at(poll or {}))


def question_fields(communique: Communique) -> Doc:
    """What turns the communiqué's Note into a Question (Mastodon's poll shape)."""
    poll = communique.poll or {}
    counts = poll.get("counts") or {}
    fields: Doc = {
        "type": "Question",
        "oneOf": [
            {
                "type": "Note",
                "name": choice,
                "replies": {"type": "Collection", "totalItems": int(counts.get(choice, 0))},
            }
            for choice in poll.get("choices", [])
        ],
        "endTime": poll.get("closes_at"),
        "votersCount": int(poll.get("voters", 0)),
    }
    if communique.poll_closed_at is not None:
        fields["closed"] = iso(communique.poll_closed_at)
    return fields


def vote_of(note: Doc) -> str | None:
    """The choice a Note votes for, or None if it is not a vote (it has content)."""
    name = note.get("name")
    content = note.get("content")
    if not isinstance(name, str) or (isinstance(content, str) and content.strip()):
        return None
    return name


async def record_vote(
    session: AsyncSession,
    communique: Communique,
    *,
    choice: str,
    actor_uri: str,
    vote_uri: str,
    now: datetime,
) -> bool:
    """Count one vote; False for a second vote by the same actor. Raises when closed."""
    poll = dict(communique.poll or {})
    if is_closed(communique, now):
        raise Forbidden("this poll is closed")
    if choice not in poll.get("choices", []):
        raise BadRequest("that is not one of the poll's choices")
    voted = await session.scalar(
        select(PollVote.id).where(
            PollVote.communique_id == communique.id, PollVote.actor_uri == actor_uri
        )
    )
    if voted is not None:
        return False
    session.add(
        PollVote(
            communique_id=communique.id,
            actor_uri=actor_uri,
            choice=choice,
            vote_uri=vote_uri,
            created_at=now,
        )
    )
    counts = dict(poll.get("counts") or {})
    counts[choice] = int(counts.get(choice, 0)) + 1
    poll["counts"] = counts
    poll["voters"] = int(poll.get("voters", 0)) + 1
    communique.poll = poll  # a new dict: the JSON column sees the change
    await session.flush()
    return True


async def due(session: AsyncSession, now: datetime) -> list[Communique]:
    """Open polls whose time is up (the worker closes them)."""
    rows = (
        await session.scalars(
            select(Communique).where(
                Communique.poll.is_not(None),
                Communique.poll_closed_at.is_(None),
                Communique.deleted_at.is_(None),
            )
        )
    ).all()
    return [c for c in rows if c.poll and now >= closes_at(c.poll)]


async def voter_inboxes(session: AsyncSession, communique_id: int) -> list[str]:
    from server.models import RemoteActor

    rows = await session.execute(
        select(RemoteActor.shared_inbox_uri, RemoteActor.inbox_uri)
        .join(PollVote, PollVote.actor_uri == RemoteActor.uri)
        .where(PollVote.communique_id == communique_id)
    )
    return list(dict.fromkeys(shared or inbox for shared, inbox in rows))
