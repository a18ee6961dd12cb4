"""FEP-8b32 integrity proofs against the published vectors (``proofs/vectors/`` of the
reference folder; its SOURCES.md says where each file comes from).

- W3C Data Integrity EdDSA Cryptosuites, eddsa-jcs-2022: the signed credential verifies with
  the test key, signing the unsigned one gives it again, and every intermediate value
  (canonical document, hashes, canonical proof configuration, signature) is the published one;
- FEP-8b32's Gherkin scenarios, all three stored revisions: the signed document verifies with
  the key its actor publishes (FEP-521a), and signing the document gives the signed one where
  the revision puts the data-integrity context in the proof, as ``sign`` does;
- RFC 8785's reference test data through ``canonical_json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import base58
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from server.activitypub.integrity import (
    Verified,
    assertion_keys_of,
    canonical_json,
    parse_multikey,
    sign,
    verification_method_of,
    verify,
)
from tests.reference import reference_dir

VECTORS = reference_dir() / "proofs" / "vectors"
W3C = VECTORS / "w3c-vc-di-eddsa"
FEATURES = sorted((VECTORS / "fep-8b32").glob("fep-8b32.feature@*"))
JCS_INPUTS = sorted((VECTORS / "jcs" / "input").glob("*.json"))
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _secret_key(multibase: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 ``secretKeyMultibase``: multicodec ed25519-priv (0x1300, varint 0x80 0x26)."""
    data = base58.b58decode(multibase[1:])
    assert multibase[0] == "z" and data[:2] == b"\x80\x26" and len(data) == 34
    return ed25519.Ed25519PrivateKey.from_private_bytes(data[2:])


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _text(name: str) -> str:
    return (W3C / name).read_text(encoding="utf-8").strip()


def test_the_vectors_are_there() -> None:
    assert W3C.is_dir() and len(FEATURES) == 3 and len(JCS_INPUTS) == 6


# --------------------------------------------------------------------------------------------
# W3C eddsa-jcs-2022


def test_w3c_key_pair() -> None:
    pair = _json(W3C / "keyPair.json")
    public = parse_multikey(pair["publicKeyMultibase"])
    assert public is not None and public == _secret_key(pair["privateKeyMultibase"]).public_key()


def test_w3c_signed_credential_verifies() -> None:
    document = _json(W3C / "signedJCS.json")
    public = parse_multikey(_json(W3C / "keyPair.json")["publicKeyMultibase"])
    assert public is not None
    result = verify(document, public, now=NOW)
    assert isinstance(result, Verified)
    assert result.verification_method_uri == document["proof"]["verificationMethod"]
    assert result.owner_uri is None  # a credential names an issuer, not an actor
    assert result.created == datetime(2023, 2, 24, 23, 36, 38, tzinfo=UTC)
    document["credentialSubject"]["alumniOf"] = "The School of Counter-Examples"
    assert not isinstance(verify(document, public, now=NOW), Verified)


def test_w3c_signing_gives_the_signed_credential() -> None:
    expected = _json(W3C / "signedJCS.json")
    document = sign(
        _json(W3C / "unsigned.json"),
        verification_method=expected["proof"]["verificationMethod"],
        private_key=_secret_key(_json(W3C / "keyPair.json")["privateKeyMultibase"]),
        created=datetime.fromisoformat(expected["proof"]["created"]),
    )
    assert document == expected


def test_w3c_intermediate_values() -> None:
    unsigned = _json(W3C / "unsigned.json")
    canonical = canonical_json(unsigned)
    assert canonical == _text("canonDocJCS.txt").encode("utf-8")
    assert hashlib.sha256(canonical).hexdigest() == _text("docHashJCS.txt")
    proof_config = canonical_json(_json(W3C / "proofConfigJCS.json"))
    assert proof_config == _text("proofCanonJCS.txt").encode("utf-8")
    assert hashlib.sha256(proof_config).hexdigest() == _text("proofHashJCS.txt")
    hash_data = hashlib.sha256(proof_config).digest() + hashlib.sha256(canonical).digest()
    assert hash_data.hex() == _text("combinedHashJCS.txt")
    key = _secret_key(_json(W3C / "keyPair.json")["privateKeyMultibase"])
    signature = key.sign(hash_data)
    assert signature.hex() == _text("sigHexJCS.txt")
    assert "z" + base58.b58encode(signature).decode() == _text("sigBTC58JCS.txt")


# --------------------------------------------------------------------------------------------
# FEP-8b32 feature files

_DOCSTRING = re.compile(r'^([ \t]*)"""[ \t]*\n(.*?)^[ \t]*"""', re.MULTILINE | re.DOTALL)


def _scenarios(path: Path) -> dict[str, dict[str, Any]]:
    """{scenario name: {"steps": [step lines], "docs": [JSON docstrings]}} of a Gherkin file."""
    scenarios: dict[str, dict[str, Any]] = {}
    text = path.read_text(encoding="utf-8")
    for block in re.split(r"^\s*Scenario:\s*", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        docs = [json.loads(match.group(2)) for match in _DOCSTRING.finditer(body)]
        steps = _DOCSTRING.sub("", body).split("\n")
        scenarios[name.strip()] = {"steps": [s.strip() for s in steps if s.strip()], "docs": docs}
    return scenarios


def _quoted(steps: list[str], prefix: str) -> str:
    for step in steps:
        match = re.match(rf'(?:Given|And|When|Then)\s+{prefix}\s+"([^"]*)"', step, re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError(f"no step {prefix!r} in {steps}")


@pytest.mark.parametrize("path", FEATURES, ids=lambda p: p.name)
def test_fep_8b32_signed_document_verifies_with_the_actors_key(path: Path) -> None:
    scenario = _scenarios(path)["Verifying a signature"]
    document, actor = scenario["docs"]
    assert "Then the document is valid" in scenario["steps"]
    keys = {key_id: key for key_id, controller, key in assertion_keys_of(actor)}
    method = verification_method_of(document)
    assert method is not None and method in keys
    result = verify(document, keys[method], now=NOW)
    assert isinstance(result, Verified) and result.owner_uri == actor["id"]
    document["actor"] = "https://server.example/users/bob"
    assert not isinstance(verify(document, keys[method], now=NOW), Verified)


@pytest.mark.parametrize("path", FEATURES, ids=lambda p: p.name)
def test_fep_8b32_signing(path: Path) -> None:
    scenario = _scenarios(path)["Signing document"]
    document, expected = scenario["docs"]
    steps = scenario["steps"]
    key = _secret_key(_quoted(steps, r"Ed25519 (?:secret|private) key"))
    result = sign(
        document,
        verification_method=_quoted(steps, "Signing the document for key"),
        private_key=key,
        created=datetime.fromisoformat(_quoted(steps, "current time")),
    )
    assert isinstance(verify(expected, key.public_key(), now=NOW), Verified)
    if "@context" in expected["proof"]:
        assert result == expected
    else:
        # The 2023 revision's proof has no @context; sign() follows the current one.
        assert {k: v for k, v in result.items() if k != "proof"} == document
        assert isinstance(verify(result, key.public_key(), now=NOW), Verified)


# --------------------------------------------------------------------------------------------
# RFC 8785


@pytest.mark.parametrize("path", JCS_INPUTS, ids=lambda p: p.name)
def test_jcs_reference_data(path: Path) -> None:
    expected = (path.parent.parent / "output" / path.name).read_bytes()
    assert canonical_json(_json(path)) == expected
