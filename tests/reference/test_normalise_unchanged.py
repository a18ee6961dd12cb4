"""normalise() answers every reference document exactly as it did with the publishers' contexts.

``normalise_sha256.json`` holds, per document, the SHA-256 of ``normalise()``'s answer (as
sorted, compact JSON) recorded while the JSON-LD contexts were still the publishers' own files.
Our context tables replaced them; the answers must not move. (Only the digests are kept here:
the documents, and so their normalised forms, are other projects' text.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from server.activitypub.jsonld import normalise
from tests.reference.test_remote_documents import FIXTURES, load

EXPECTED: dict[str, str] = json.loads(
    (Path(__file__).parent / "normalise_sha256.json").read_text(encoding="utf-8")
)


def _digest(answer: dict[str, Any]) -> str:
    text = json.dumps(answer, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_every_recorded_document_is_there() -> None:
    present = {f"{p.parent.name}/{p.name}" for p in FIXTURES.glob("*/*.json")}
    assert present == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_normalise_answer_is_unchanged(name: str) -> None:
    assert _digest(normalise(load(FIXTURES / name))) == EXPECTED[name]
