"""Ratification records: validation, the interocc context, and the round trip through JSON-LD."""

from __future__ import annotations

import httpx
import pytest

from server import ratification
from server.activitypub import jsonld
from server.errors import BadRequest
from tests.support.servers import ServerThread

FULL = {
    "decided_on": "2011-05-20",
    "decided_at": "Plaza del Sol, Madrid",
    "process": "modified-consensus",
    "threshold_percent": "90",
    "votes_for": "412",
    "votes_against": "7",
    "abstentions": "30",
    "blocks": "0",
    "minutes": "https://pad.example/acta-20-mayo",
}


def test_empty_form_means_no_record() -> None:
    assert ratification.validate({"process": "consensus", "threshold_percent": ""}) is None


def test_full_record_is_kept_typed() -> None:
    record = ratification.validate(FULL)
    assert record == {
        "decided_on": "2011-05-20",
        "place": "Plaza del Sol, Madrid",
        "process": "modified-consensus",
        "threshold_percent": 90,
        "votes_for": 412,
        "votes_against": 7,
        "abstentions": 30,
        "blocks": 0,
        "minutes": "https://pad.example/acta-20-mayo",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"decided_on": "20/05/2011"}, "decided_on"),
        ({"process": "acclamation"}, "process"),
        ({"threshold_percent": "40"}, "threshold_percent"),
        ({"threshold_percent": ""}, "threshold_percent"),
        ({"votes_for": "-1"}, "votes_for"),
        ({"blocks": "two"}, "blocks"),
        ({"minutes": "javascript:alert(1)"}, "minutes"),
        ({"decided_at": "x" * 201}, "decided_at"),
    ],
)
def test_bad_values_name_their_field(change: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ratification.validate({**FULL, **change})
    assert caught.value.field == field


def test_threshold_only_for_modified_consensus() -> None:
    record = ratification.validate({**FULL, "process": "majority"})
    assert record is not None and record["threshold_percent"] is None


def test_readable_text_for_software_without_the_context() -> None:
    record = ratification.validate(FULL)
    assert record is not None
    html = ratification.readable_html(record)
    assert html.startswith("<p>Decided by modified consensus (90% threshold) on 20 May 2011")
    assert "at Plaza del Sol, Madrid: 412 for, 7 against, 30 abstaining, 0 blocking." in html
    assert 'href="https://pad.example/acta-20-mayo"' in html


def test_readable_text_escapes_the_place() -> None:
    record = ratification.validate({**FULL, "decided_at": "<b>Sol</b>"})
    assert record is not None
    assert "&lt;b&gt;Sol&lt;/b&gt;" in ratification.readable_html(record)


def test_round_trip_through_another_instances_context_url() -> None:
    """A Note from any InterOcc host: its context URL is answered from our bundled copy."""
    record = ratification.validate(FULL)
    assert record is not None
    note = {
        "@context": [
            "https://www.w3.org/ns/activitystreams",
            "https://b.example:8443/ns/interocc/v1",
        ],
        "id": "https://b.example:8443/actors/sol/communiques/x",
        "type": "Note",
        "content": "…",
        "ratification": ratification.to_document(record),
    }
    normalised = jsonld.normalise(note)
    assert ratification.from_remote(normalised.get("ratification")) == record


def test_without_the_context_the_terms_are_dropped() -> None:
    record = ratification.validate(FULL)
    assert record is not None
    note = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://b.example/n",
        "type": "Note",
        "ratification": ratification.to_document(record),
    }
    assert "ratification" not in jsonld.normalise(note)


def test_invalid_remote_record_is_ignored() -> None:
    assert ratification.from_remote({"type": "Ratification", "decidedOn": "soon"}) is None
    assert ratification.from_remote("https://elsewhere.example/r") is None


async def test_instance_serves_the_bundled_context(server: ServerThread) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.base_url}/ns/interocc/v1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/ld+json")
    assert response.headers["access-control-allow-origin"] == "*"
    context = response.json()["@context"]
    assert context["interocc"] == ratification.NAMESPACE
    assert context["votesFor"] == {"@id": "interocc:votesFor", "@type": "xsd:integer"}
