"""Ratification records: how an assembly decided a communiqué.

A record travels in the Note twice: as machine-readable fields under the ``interocc:``
JSON-LD context (the instance serves it at /ns/interocc/v1 and every InterOcc has it
bundled), so another InterOcc shows it natively; and as a readable paragraph appended to
``content``, so Mastodon and the rest show it as text.

Stored shape (Communique.ratification, and what :func:`from_remote` returns)::

    {"decided_on": "2011-05-20", "place": "Plaza del Sol", "process": "consensus",
     "threshold_percent": 90 | None, "votes_for": 120 | None, "votes_against": …,
     "abstentions": …, "blocks": …, "minutes": "https://…" | None}
"""

from __future__ import annotations

import html
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from server.errors import BadRequest

CONTEXT_PATH = "/ns/interocc/v1"
NAMESPACE = "https://interocc.org/ns#"

# process value (stored, form) → term (AS document) and readable name
PROCESSES: dict[str, tuple[str, str]] = {
    "consensus": ("Consensus", "consensus"),
    "modified-consensus": ("ModifiedConsensus", "modified consensus"),
    "majority": ("Majority", "majority vote"),
}
_BY_TERM = {term: key for key, (term, _) in PROCESSES.items()}
COUNTS = ("votes_for", "votes_against", "abstentions", "blocks")
_COUNT_TERMS = {
    "votes_for": "votesFor",
    "votes_against": "votesAgainst",
    "abstentions": "abstentions",
    "blocks": "blocks",
}
MAX_COUNT = 10_000_000
MAX_PLACE = 200

Record = dict[str, Any]


def _count(raw: object, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise BadRequest("a count must be a whole number", field=name)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadRequest("a count must be a whole number", field=name) from None
    if not 0 <= value <= MAX_COUNT:
        raise BadRequest(f"a count is between 0 and {MAX_COUNT}", field=name)
    return value


def _minutes(raw: object) -> str | None:
    if raw is None or str(raw).strip() == "":
        return None
    url = str(raw).strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or len(url) > 2048:
        raise BadRequest("the minutes link must be an http(s) URL", field="minutes")
    return url


def validate(values: dict[str, Any]) -> Record | None:
    """A record from form-like values (decided_on, decided_at, process, threshold_percent,
    votes_for, votes_against, abstentions, blocks, minutes); None when nothing was filled in.

    Raises BadRequest naming the field at fault.
    """
    filled = any(str(values.get(k) or "").strip() for k in ("decided_on", "decided_at", *COUNTS))
    if not filled and not str(values.get("minutes") or "").strip():
        return None
    raw_date = str(values.get("decided_on") or "").strip()
    try:
        decided_on = date.fromisoformat(raw_date)
    except ValueError:
        raise BadRequest(
            "give the date of the assembly as YYYY-MM-DD", field="decided_on"
        ) from None
    place = " ".join(str(values.get("decided_at") or "").split())
    if len(place) > MAX_PLACE:
        raise BadRequest(f"the place is at most {MAX_PLACE} characters", field="decided_at")
    process = str(values.get("process") or "").strip()
    if process not in PROCESSES:
        raise BadRequest("choose consensus, modified consensus or majority", field="process")
    threshold = _count(values.get("threshold_percent"), "threshold_percent")
    if process == "modified-consensus":
        if threshold is None or not 50 <= threshold <= 100:
            raise BadRequest(
                "modified consensus needs a threshold between 50 and 100 percent",
                field="threshold_percent",
            )
    else:
        threshold = None
    record: Record = {
        "decided_on": decided_on.isoformat(),
        "place": place,
        "process": process,
        "threshold_percent": threshold,
        "minutes": _minutes(values.get("minutes")),
    }
    for name in COUNTS:
        record[name] = _count(values.get(name), name)
    return record


def to_document(record: Record) -> dict[str, Any]:
    """The ``ratification`` node of a Note (terms of the interocc context)."""
    node: dict[str, Any] = {
        "type": "Ratification",
        "decidedOn": record["decided_on"],
        "process": PROCESSES[record["process"]][0],
    }
    if record.get("place"):
        node["decidedAt"] = record["place"]
    if record.get("threshold_percent") is not None:
        node["thresholdPercent"] = record["threshold_percent"]
    for name in COUNTS:
        if record.get(name) is not None:
            node[_COUNT_TERMS[name]] = record[name]
    if record.get("minutes"):
        node["minutes"] = record["minutes"]
    return node


def from_remote(node: object) -> Record | None:
    """A record from a normalised remote Note's ``ratification``; None if absent or invalid."""
    if isinstance(node, list):
        node = node[0] if node else None
    if not isinstance(node, dict) or node.get("type") != "Ratification":
        return None
    minutes = node.get("minutes")
    if isinstance(minutes, dict):
        minutes = minutes.get("id")
    values = {
        "decided_on": node.get("decidedOn"),
        "decided_at": node.get("decidedAt") if isinstance(node.get("decidedAt"), str) else "",
        "process": _BY_TERM.get(str(node.get("process") or "").rsplit("#", 1)[-1], ""),
        "threshold_percent": node.get("thresholdPercent"),
        "minutes": minutes if isinstance(minutes, str) else None,
    }
    for name in COUNTS:
        values[name] = node.get(_COUNT_TERMS[name])
    try:
        return validate(values)
    except BadRequest:
        return None


def summary_text(record: Record) -> str:
    """One readable sentence, e.g. 'Decided by consensus on 20 May 2011 at Plaza del Sol'."""
    process = PROCESSES[record["process"]][1]
    if record.get("threshold_percent") is not None:
        process += f" ({record['threshold_percent']}% threshold)"
    day = date.fromisoformat(record["decided_on"])
    text = f"Decided by {process} on {day.day} {day:%B %Y}"
    if record.get("place"):
        text += f" at {record['place']}"
    counts = [
        f"{record[name]} {label}"
        for name, label in zip(COUNTS, ("for", "against", "abstaining", "blocking"), strict=True)
        if record.get(name) is not None
    ]
    if counts:
        text += ": " + ", ".join(counts)
    return text + "."


def readable_html(record: Record) -> str:
    """The paragraph appended to the Note's content for software that knows no interocc terms."""
    text = html.escape(summary_text(record))
    if record.get("minutes"):
        href = html.escape(record["minutes"], quote=True)
        text += f' <a href="{href}" rel="nofollow noopener noreferrer">Minutes</a>'
    return f"<p>{text}</p>"
