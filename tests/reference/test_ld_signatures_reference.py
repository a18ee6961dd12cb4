"""A Create that a real Mastodon server signed with RsaSignature2017, checked by ``ldsig``.

The vector lives outside the repository, at ``proofs/vectors/mastodon/`` of the reference folder
(see ``tests/reference/__init__.py``; its SOURCES.md says where it was published): the signed
``document`` and the actor's ``key`` (``id``, ``owner``, ``publicKeyPem``). It names only
contexts we hold offline, so it must verify without a single request, and any change to what it
says must make it fail.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from server.activitypub import ldsig
from server.activitypub.jsonld import normalise
from server.activitypub.signatures import load_public_key
from tests.reference import reference_dir
from tests.support.nonet import forbid_network
from tests.test_ld_signatures import independent_verify

VECTOR = reference_dir() / "proofs" / "vectors" / "mastodon" / "activitypub-academy-create.json"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTOR.read_text(encoding="utf-8"))
    return loaded


def test_mastodons_signature_verifies(vector: dict[str, Any]) -> None:
    document, key = vector["document"], vector["key"]
    assert ldsig.creator_of(document) == key["id"]
    result = ldsig.verify(document, key["publicKeyPem"])
    assert isinstance(result, ldsig.Verified), result
    assert result.creator_uri == key["id"]
    assert result.created.isoformat() == "2024-09-12T16:50:46+00:00"
    # The signing key belongs to the activity's actor: the check left to the caller.
    assert key["owner"] == normalise(document)["actor"]


def test_the_independent_verifier_agrees(vector: dict[str, Any]) -> None:
    public_key = load_public_key(vector["key"]["publicKeyPem"])
    assert public_key is not None
    assert independent_verify(vector["document"], public_key)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["object"].__setitem__("content", "<p>Tset</p>"),
        lambda d: d["object"]["contentMap"].__setitem__("en", "<p>Tset</p>"),
        lambda d: d.__setitem__("actor", "https://activitypub.academy/users/someone_else"),
        lambda d: d["object"].__setitem__("attributedTo", "https://elsewhere.example/users/x"),
        lambda d: d["cc"].append("https://elsewhere.example/users/x"),
        lambda d: d["object"].__setitem__("sensitive", True),
        lambda d: d["object"].__setitem__("conversation", "tag:elsewhere.example,2024:1"),
        lambda d: d["signature"].__setitem__("created", "2024-09-12T16:50:47Z"),
        lambda d: d["signature"].__setitem__(
            "creator", "https://activitypub.academy/users/someone_else#main-key"
        ),
    ],
    ids=[
        "content",
        "contentMap",
        "actor",
        "attributedTo",
        "cc",
        "sensitive",
        "conversation",
        "created",
        "creator",
    ],
)
def test_tampering_with_it_fails(vector: dict[str, Any], change: Any) -> None:
    document = copy.deepcopy(vector["document"])
    change(document)
    result = ldsig.verify(document, vector["key"]["publicKeyPem"])
    assert isinstance(result, ldsig.Rejected), result
    assert result.reason == "signature does not match the document"


def test_a_flipped_signature_bit_fails(vector: dict[str, Any]) -> None:
    document = copy.deepcopy(vector["document"])
    value = document["signature"]["signatureValue"]
    document["signature"]["signatureValue"] = ("B" if value[0] == "A" else "A") + value[1:]
    assert isinstance(ldsig.verify(document, vector["key"]["publicKeyPem"]), ldsig.Rejected)
