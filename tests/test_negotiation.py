"""Content negotiation: one URL answers AS2 JSON to servers and HTML to people.

``wants_activity_json(accept)`` returns the AS2 media type to answer with, or None for HTML.
"""

from __future__ import annotations

import pytest

from server.activitypub.negotiation import wants_activity_json

AS2 = "application/activity+json"
LD_AS = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'

MASTODON = f"application/activity+json, {LD_AS}, text/html;q=0.1"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
SAFARI = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CURL = "*/*"


def test_mastodon_fetch_gets_activity_json() -> None:
    assert wants_activity_json(MASTODON) == AS2


def test_ld_json_with_the_activitystreams_profile_gets_that_type_back() -> None:
    assert wants_activity_json(LD_AS) == LD_AS
    assert (
        wants_activity_json("application/ld+json;profile=https://www.w3.org/ns/activitystreams")
        == LD_AS
    )


def test_ld_json_without_a_profile_counts_as_activitystreams() -> None:
    assert wants_activity_json("application/ld+json") == LD_AS


def test_ld_json_with_another_profile_is_not_activitystreams() -> None:
    assert wants_activity_json('application/ld+json; profile="http://schema.org"') is None
    assert (
        wants_activity_json(
            'application/ld+json; profile="https://www.w3.org/ns/activitystreams/other"'
        )
        is None
    )


@pytest.mark.parametrize("accept", [FIREFOX, CHROME, SAFARI], ids=["firefox", "chrome", "safari"])
def test_browsers_get_html(accept: str) -> None:
    assert wants_activity_json(accept) is None


@pytest.mark.parametrize("accept", [CURL, "text/*", "text/html", "application/json"])
def test_wildcards_html_and_plain_json_get_html(accept: str) -> None:
    assert wants_activity_json(accept) is None


@pytest.mark.parametrize("accept", [None, "", " ", ",", ";"])
def test_no_accept_header_gets_html(accept: str | None) -> None:
    assert wants_activity_json(accept) is None


def test_higher_q_for_as2_wins_over_html() -> None:
    assert wants_activity_json("text/html;q=0.5, application/activity+json;q=0.9") == AS2


def test_higher_q_for_html_wins_over_as2() -> None:
    assert wants_activity_json("application/activity+json;q=0.5, text/html;q=0.9") is None


def test_as2_wins_a_tie_with_html() -> None:
    assert wants_activity_json("text/html, application/activity+json") == AS2


def test_as2_beats_a_wildcard_of_equal_weight() -> None:
    assert wants_activity_json("*/*, application/activity+json") == AS2


def test_q_zero_means_not_acceptable() -> None:
    assert wants_activity_json("application/activity+json;q=0") is None
    assert wants_activity_json("application/activity+json;q=0.0, text/html;q=0.1") is None


def test_media_types_and_parameters_are_case_insensitive() -> None:
    assert wants_activity_json("Application/Activity+JSON") == AS2
    assert wants_activity_json("text/html;Q=0.1, application/activity+json;Q=0.9") == AS2


def test_the_best_of_both_as2_types_is_chosen() -> None:
    accept = f"application/activity+json;q=0.2, {LD_AS};q=0.8, text/html;q=0.5"
    assert wants_activity_json(accept) == LD_AS


@pytest.mark.parametrize(
    "accept",
    [
        "application/activity+json;q=abc",
        "application/activity+json;q=",
        "application/activity+json;q",
        "application/activity+json;q=-1",
        "application/activity+json;q=1e999",
        "application/activity+json;q=nan",
        "application/activity+json;;;q==0.5",
        "application/activity+json; profile",
        "text/html;q=oops, application/activity+json;q=0.3",
        ";q=1, ,,",
        "\x00\xff",
        "a" * 10_000,
    ],
)
def test_garbage_never_raises(accept: str) -> None:
    assert wants_activity_json(accept) in {None, AS2}


def test_unparseable_q_counts_as_not_acceptable() -> None:
    assert wants_activity_json("application/activity+json;q=abc") is None
    assert wants_activity_json("application/activity+json;q=abc, text/html;q=0.1") is None
    assert wants_activity_json("text/html;q=oops, application/activity+json;q=0.3") == AS2
