"""The JSON-LD fast path gives pyld's answer on every real document it takes.

``fast_normalise`` may decline any document (None: "ask pyld"); when it answers, its answer
must be exactly ``normalise_full``'s. The common shapes of the big servers must take it, or the
fast path is dead code and proves nothing here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from server.activitypub.jsonld import JsonLdError, fast_normalise, normalise_full
from tests.reference.test_remote_documents import ALL, FIXTURES, load

# Activities and notes as Mastodon and GoToSocial send them: the bulk of inbox traffic. (Lemmy's
# context, Pleroma's and Misskey's inline ones and Mastodon's actor take the full path.)
MUST_BE_FAST = (
    "mastodon/create_note.json",
    "mastodon/delete.json",
    "mastodon/follow.json",
    "mastodon/note.json",
    "mastodon/undo_follow.json",
    "gotosocial/create_note.json",
    "gotosocial/note.json",
    "gotosocial/person.json",
)


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", ALL, ids=_name)
def test_fast_answer_is_pyld_answer(path: Path) -> None:
    doc = load(path)
    fast = fast_normalise(copy.deepcopy(doc))
    if fast is None:
        return
    try:
        full = normalise_full(copy.deepcopy(doc))
    except JsonLdError as exc:
        pytest.fail(f"the fast path accepted a document pyld refuses: {exc}")
    assert fast == full


@pytest.mark.parametrize("name", MUST_BE_FAST)
def test_common_documents_take_the_fast_path(name: str) -> None:
    assert fast_normalise(load(FIXTURES / name)) is not None


def test_most_documents_take_the_fast_path() -> None:
    taken = [p for p in ALL if fast_normalise(load(p)) is not None]
    assert len(taken) * 2 >= len(ALL), sorted(set(map(_name, ALL)) - set(map(_name, taken)))
