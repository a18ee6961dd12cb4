"""RsaSignature2017 (Mastodon's Linked Data signature) written from the algorithm alone, sharing
no code with server/activitypub/ldsig.py: the independent side of our tests.

    options        = {"@context": "https://w3id.org/identity/v1", "creator": …, "created": …}
    to_be_signed   = sha256_hex(URDNA2015(options)) + sha256_hex(URDNA2015(doc - signature))
    signatureValue = base64(RSASSA-PKCS1-v1_5-SHA256(to_be_signed))

pyld and ``cryptography`` are used directly, with the contexts pyld ships itself plus any the
caller hands in (a context is published data, as a verifier would download it). The options'
canonical N-Quads are written out by hand from the identity/v1 context: ``creator`` is
``dc:creator`` as an IRI, ``created`` is ``dc:created`` as an xsd:dateTime.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pyld.jsonld
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyld.documentloader.frozen import BUNDLED_CONTEXTS


def _loader(extra: Mapping[str, Any]) -> Any:
    def load(url: str, options: object = None) -> dict[str, Any]:
        if url in extra:
            return {"contextUrl": None, "documentUrl": url, "document": extra[url]}
        if url not in BUNDLED_CONTEXTS:
            raise LookupError(f"no offline copy of {url}")
        document = json.loads(BUNDLED_CONTEXTS[url].read_text(encoding="utf-8"))
        return {"contextUrl": None, "documentUrl": url, "document": document}

    return load


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_be_signed(
    document: Mapping[str, Any],
    creator: str,
    created: str,
    contexts: Mapping[str, Any] | None = None,
) -> bytes:
    options_nquads = (
        f'_:c14n0 <http://purl.org/dc/terms/created> "{created}"'
        "^^<http://www.w3.org/2001/XMLSchema#dateTime> .\n"
        f"_:c14n0 <http://purl.org/dc/terms/creator> <{creator}> .\n"
    )
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    document_nquads = pyld.jsonld.normalize(
        unsigned,
        {
            "algorithm": "URDNA2015",
            "format": "application/n-quads",
            "documentLoader": _loader(contexts or {}),
        },
    )
    assert document_nquads
    return (_sha256_hex(options_nquads) + _sha256_hex(document_nquads)).encode("ascii")


def verify(
    document: Mapping[str, Any],
    public_key: object,
    contexts: Mapping[str, Any] | None = None,
) -> bool:
    signature = document["signature"]
    assert signature["type"] == "RsaSignature2017"
    data = to_be_signed(document, signature["creator"], signature["created"], contexts)
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(
            base64.b64decode(signature["signatureValue"]), data, padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return False
    return True


def sign(
    document: Mapping[str, Any],
    key: rsa.RSAPrivateKey,
    *,
    creator: str,
    created: str,
    contexts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data = to_be_signed(document, creator, created, contexts)
    value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return {
        **document,
        "signature": {
            "type": "RsaSignature2017",
            "creator": creator,
            "created": created,
            "signatureValue": base64.b64encode(value).decode("ascii"),
        },
    }
