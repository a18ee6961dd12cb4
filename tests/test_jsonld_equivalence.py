"""normalise() gives the recorded answer for every JSON-LD trick case (tests/jsonld_cases.py).

The answers in ``jsonld_expected.json`` were recorded while the contexts were the publishers' own
files; our context tables (``server/activitypub/context_tables.py``) and pyld's shipped W3C
contexts must read every case the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from server.activitypub import context_tables, jsonld
from server.activitypub.jsonld import JsonLdError, normalise, normalise_full
from tests.jsonld_cases import CASES

EXPECTED: dict[str, Any] = json.loads(
    (Path(__file__).parent / "jsonld_expected.json").read_text(encoding="utf-8")
)


def test_every_case_has_an_expectation() -> None:
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_reads_as_recorded(name: str) -> None:
    try:
        answer = normalise_full(copy.deepcopy(CASES[name]))
    except JsonLdError as exc:
        answer = {"error": str(exc)}
    assert answer == EXPECTED[name]
    # normalise gives the same answer, less any FEP-8b32 proof (jsonld._without_proofs).
    try:
        quick = normalise(copy.deepcopy(CASES[name]))
    except JsonLdError as exc:
        quick = {"error": str(exc)}
    if quick != answer:
        unproven = copy.deepcopy(answer)
        for node in (unproven, unproven.get("object")):
            if isinstance(node, dict):
                node.pop("sec:proof", None)
        assert quick == unproven
        assert "sec:proof" in json.dumps(answer)


def test_every_context_of_the_cases_is_known() -> None:
    """Each context URL the cases name is answered by pyld or a table, except the two unknowns."""
    named = set()
    for doc in CASES.values():
        context = doc.get("@context", [])
        named |= {
            c for c in (context if isinstance(context, list) else [context]) if isinstance(c, str)
        }
    unknown = {url for url in named if jsonld.document_loader(url)["document"] == {"@context": {}}}
    assert unknown == {"https://unknown.example/ns", "http://joinmastodon.org/ns"}
    for url in context_tables.tables():
        assert url in named or url.startswith("https://litepub.github.io"), url
