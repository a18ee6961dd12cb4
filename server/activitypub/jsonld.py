"""JSON-LD handling for incoming ActivityPub documents.

Remote servers write the same activity in many shapes: different ``@context`` arrays, prefixed
names (``as:Public``), extension terms defined inline or in context documents of their own.
``normalise`` expands a document with pyld and compacts it again against one fixed context, so the
rest of the server can read plain AS2 short names and never has to interpret a ``@context``.

Context documents are never fetched: a remote document names the contexts it wants, and letting
it make us issue requests would be both a server-side request forgery vector and a way to make
our parsing depend on a third party's uptime. The W3C contexts that pyld ships are read from the
installed pyld package, the other well-known ones from our own tables (``context_tables``), and
our own ``interocc`` context from ``contexts/``; any other context URL is treated as empty, so
its terms are dropped rather than the activity being refused.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread
from cachetools import LRUCache
from pyld import jsonld as _pyld
from pyld.documentloader.frozen import BUNDLED_CONTEXTS

from server.activitypub import context_tables

logger = logging.getLogger(__name__)

AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"

_CONTEXT_DIR = Path(__file__).parent / "contexts"

# Pleroma and its forks put "https://<their host>/schemas/litepub-0.1.jsonld" in every document,
# so the URL differs per instance; all of them serve (a version of) the same document.
_LITEPUB_SUFFIX = "/schemas/litepub-0.1.jsonld"
_LITEPUB = "litepub-0.1"
# Every InterOcc instance serves its own copy of the interocc context at this path.
_INTEROCC_PATH = "/ns/interocc/v1"
_INTEROCC_FILE = "interocc-v1.json"
_INTEROCC = "interocc"
# Our own context document, as the /ns/interocc/v1 route serves it.
INTEROCC_CONTEXT_FILE = _CONTEXT_DIR / _INTEROCC_FILE
# The W3C contexts pyld ships with itself, and their other published spellings.
_PYLD_ALIASES = {
    "https://www.w3.org/ns/activitystreams.jsonld": "https://www.w3.org/ns/activitystreams",
}

_AS = "https://www.w3.org/ns/activitystreams"

# The terms every consumer of normalise() may rely on. Extensions that Mastodon and others define
# inline are added here so they compact to short names instead of full IRIs.
_EXTENSIONS: dict[str, Any] = {
    "toot": "http://joinmastodon.org/ns#",
    "schema": "http://schema.org#",
    "ostatus": "http://ostatus.org#",
    "interocc": "https://interocc.org/ns#",
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "sensitive": "as:sensitive",
    "Hashtag": "as:Hashtag",
    "movedTo": {"@id": "as:movedTo", "@type": "@id"},
    "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
    "featured": {"@id": "toot:featured", "@type": "@id"},
    "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
    "Emoji": "toot:Emoji",
    "votersCount": "toot:votersCount",
    "PropertyValue": "schema:PropertyValue",
    "value": "schema:value",
    # FEP-521a keys, as the multikey/v1 context defines them, for actors that publish Ed25519 keys.
    "Multikey": "sec:Multikey",
    "assertionMethod": {"@id": "sec:assertionMethod", "@type": "@id", "@container": "@set"},
    "controller": {"@id": "sec:controller", "@type": "@id"},
    "publicKeyMultibase": {"@id": "sec:publicKeyMultibase", "@type": "sec:multibase"},
}
# InterOcc's own terms (contexts/interocc-v1.json), so they compact to the same short names.
_EXTENSIONS.update(
    {k: v for k, v in json.loads((_CONTEXT_DIR / _INTEROCC_FILE).read_text())["@context"].items()}
)

CANONICAL_CONTEXT: list[Any] = [_AS, "https://w3id.org/security/v1", _EXTENSIONS]

_ADDRESSING = ("to", "cc", "bto", "bcc", "audience")
_PUBLIC_ALIASES = frozenset({"Public", "as:Public", AS_PUBLIC})

# pyld raises its own JsonLdError with a spec error code, but malformed input also surfaces as
# ValueError, TypeError, KeyError... from deep inside it. The spec codes are a fixed vocabulary,
# so they are safe to repeat in our message; anything else is not.
_SAFE_CODE = re.compile(r"^[A-Za-z@ -]{1,60}$")

# Remote documents choose their context URLs, so the set of URLs we warn about is bounded.
_WARNED_MAX = 4096
_warned: set[str] = set()
_warned_lock = threading.Lock()


class _LockedLRU(LRUCache[Any, Any]):
    """pyld's process-wide context caches, safe to share between threads.

    pyld keeps them in cachetools LRUCaches, which are not thread-safe (a read reorders the
    entries); a race there would surface as a spurious JsonLdError for a valid document. The
    lock is held for one cache operation only, never for a whole normalisation, so one large
    document cannot keep other requests waiting on it.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self._lock = threading.RLock()

    def __getitem__(self, key: Any) -> Any:
        with self._lock:
            return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        with self._lock:
            super().__delitem__(key)

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return bool(super().__contains__(key))

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            return super().get(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        with self._lock:
            return super().pop(key, *default)

    def popitem(self) -> Any:
        with self._lock:
            return super().popitem()


@functools.cache
def _thread_safe_caches() -> None:
    """Swap pyld's two shared caches for locked ones, once per process, before first use."""
    for name in ("_resolved_context_cache", "_inverse_context_cache"):
        current = getattr(_pyld, name)
        setattr(_pyld, name, _LockedLRU(current.maxsize))


class JsonLdError(Exception):
    """The document is not valid JSON-LD (or not something we can compact)."""


@functools.cache
def _index() -> dict[str, str]:
    """Context URL → the key ``_bundled`` answers it with."""
    index = {url: url for url in BUNDLED_CONTEXTS}
    index.update({alias: url for alias, url in _PYLD_ALIASES.items()})
    index.update({url: url for url in context_tables.tables()})
    return index


@functools.cache
def _bundled(key: str) -> dict[str, Any]:
    if key == _INTEROCC:
        with (_CONTEXT_DIR / _INTEROCC_FILE).open(encoding="utf-8") as f:
            ours: dict[str, Any] = json.load(f)
        return ours
    if key == _LITEPUB:
        return context_tables.pleroma_litepub()
    if key in BUNDLED_CONTEXTS:
        shipped: dict[str, Any] = json.loads(BUNDLED_CONTEXTS[key].read_text(encoding="utf-8"))
        return shipped
    return context_tables.tables()[key]


def _candidates(url: str) -> list[str]:
    """Spellings of a context URL that name the same document as far as we are concerned."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    # Scheme and host are case-insensitive; a fragment never selects a different document.
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    path = parts.path
    bases = [urlunsplit((scheme, netloc, path, parts.query, ""))]
    if path.endswith("/"):
        bases.append(urlunsplit((scheme, netloc, path.rstrip("/"), parts.query, "")))
    else:
        bases.append(urlunsplit((scheme, netloc, path + "/", parts.query, "")))
    if scheme == "http":
        # w3.org and w3id.org answer on both schemes with the same document, and so does
        # everything we bundle; people still write the http:// form in @context.
        bases += ["https" + b[len("http") :] for b in bases]
    return bases


def _lookup(url: str) -> str | None:
    index = _index()
    candidates = _candidates(url)
    for candidate in candidates:
        if candidate in index:
            return index[candidate]
    if candidates and urlsplit(candidates[0]).path.endswith(_LITEPUB_SUFFIX):
        return _LITEPUB
    if candidates and urlsplit(candidates[0]).path.rstrip("/") == _INTEROCC_PATH:
        return _INTEROCC
    return None


def _warn_unknown(url: str) -> None:
    with _warned_lock:
        if url in _warned or len(_warned) >= _WARNED_MAX:
            return
        _warned.add(url)
    # %r and a length cap: the URL comes from a remote document and must not forge log lines.
    logger.warning("unknown JSON-LD context %r treated as empty", url[:200])


def document_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyld document loader serving bundled contexts only; never touches the network.

    An unknown URL yields an empty context, so terms that only it would define are dropped
    during expansion instead of the whole document being rejected.
    """
    name = _lookup(url) if isinstance(url, str) else None
    if name is None:
        _warn_unknown(str(url))
        return {"contextUrl": None, "documentUrl": url, "document": {"@context": {}}}
    return {
        "contextUrl": None,
        "documentUrl": url,
        "contentType": "application/ld+json",
        # pyld mutates loaded documents while resolving relative @context URLs; hand out copies.
        "document": copy.deepcopy(_bundled(name)),
        # pyld only keeps a resolved remote context in its process-wide cache when the loader
        # tags it; bundled documents never change, so they may be cached (and their processed
        # form reused) across calls. Unknown URLs are left untagged so that hostile documents
        # naming many URLs cannot flush the cache with them.
        "tag": "static",
    }


def _options(**extra: Any) -> dict[str, Any]:
    return {
        # Every pyld entry point gets our loader explicitly: its default loader uses requests.
        "documentLoader": document_loader,
        # No base IRI: pyld would otherwise resolve relative IRIs against its placeholder
        # http://example.org/base/ (turning "Public" into http://example.org/base/Public).
        "base": None,
        "processingMode": "json-ld-1.1",
        "extractAllScripts": False,
        **extra,
    }


_Terms = tuple[dict[str, str | None], frozenset[str]]


@functools.cache
def _canonical_terms() -> _Terms:
    """What the canonical context expects of each property IRI it has a term for.

    Returns the value type of the plain term (None: plain literal, "@id": reference) and the set
    of IRIs that also have a language-map term (contentMap, nameMap, summaryMap).

    Compaction only uses a term when a value's datatype and language match the term's, so a
    document whose context types a value differently (miscellany's xsd:boolean ``sensitive``,
    Lemmy's untyped ``expires`` for ``as:endTime``) or sets a default ``@language`` (Pleroma sends
    ``{"@language": "und"}``) would otherwise come out under a full-IRI key or as
    ``{"@value": ...}`` objects. ``_coerce`` bends values towards these expectations first.
    """
    processor = _pyld.JsonLdProcessor()
    options = _options()
    active = processor.process_context(
        processor._get_initial_context(options), CANONICAL_CONTEXT, options
    )
    seen: dict[str, set[str | None]] = {}
    language_maps: set[str] = set()
    for definition in active["mappings"].values():
        if not definition or definition.get("reverse") or definition.get("_prefix"):
            continue
        iri = definition.get("@id")
        container = definition.get("@container") or []
        if not isinstance(iri, str):
            continue
        if "@language" in container:
            language_maps.add(iri)
        elif all(c == "@set" for c in container):
            seen.setdefault(iri, set()).add(definition.get("@type"))
    # Two plain terms for one IRI with different types would make the choice arbitrary.
    types = {iri: found.pop() for iri, found in seen.items() if len(found) == 1}
    return types, frozenset(language_maps)


def _coerce(node: Any, terms: _Terms) -> Any:
    """Prepare expanded JSON-LD for compaction against the canonical context (see above)."""
    if isinstance(node, list):
        return [_coerce(item, terms) for item in node]
    if not isinstance(node, dict) or "@value" in node:
        return node
    types, language_maps = terms
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("_:"):
            # The AS2 context maps undefined terms to blank-node IRIs ("@vocab": "_:"): they
            # carry no meaning, which is what dropping unknown terms means here.
            continue
        if key.startswith("@"):
            out[key] = _coerce(value, terms) if key in ("@graph", "@list", "@set") else value
            continue
        if key in types or key in language_maps:
            value = _coerce_values(as_list(value), types.get(key), key in language_maps)
        out[key] = _coerce(value, terms)
    return out


def _coerce_values(values: list[Any], want: str | None, language_map: bool) -> list[Any]:
    out = [_coerce_value(v, want, language_map) for v in values]
    if language_map:
        tagged = [v for v in out if isinstance(v, dict) and "@language" in v]
        plain = [v for v in out if isinstance(v, dict) and "@value" in v and "@language" not in v]
        if tagged and not plain:
            # A sender's default @language moves even its plain "content" into contentMap;
            # keep a plain value too so readers of "content" see what was written.
            out.insert(0, {"@value": tagged[0]["@value"]})
    return out


def _coerce_value(value: Any, want: str | None, language_map: bool) -> Any:
    if not isinstance(value, dict) or "@value" not in value or value.get("@type") == "@json":
        return value
    if "@language" in value:
        language = value["@language"]
        if language_map and isinstance(language, str) and language.lower() != "und":
            return value
        # A language only has somewhere to go in a language map, and "und" (undetermined,
        # BCP 47) says nothing: both become plain strings.
        value = {k: v for k, v in value.items() if k not in ("@language", "@direction")}
    literal = value["@value"]
    if want in ("@id", "@vocab"):
        return {"@id": literal} if isinstance(literal, str) else value
    coerced = {k: v for k, v in value.items() if k != "@type"}
    if want is not None:
        coerced["@type"] = want
    return coerced


def _fix_public(node: Any) -> None:
    """Spell the public collection one way in addressing, whatever the sender wrote."""
    if isinstance(node, list):
        for item in node:
            _fix_public(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _ADDRESSING:
            node[key] = _public(value)
        _fix_public(value)


def _public(value: Any) -> Any:
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, str) and value in _PUBLIC_ALIASES:
        return AS_PUBLIC
    if isinstance(value, dict) and value.get("id") in _PUBLIC_ALIASES:
        return {**value, "id": AS_PUBLIC}
    return value


def _error(exc: BaseException) -> JsonLdError:
    cause: BaseException | None = exc
    while cause is not None:
        code = getattr(cause, "code", None)
        if isinstance(code, str) and _SAFE_CODE.match(code):
            return JsonLdError(f"invalid JSON-LD: {code}")
        cause = cause.__cause__
    return JsonLdError("invalid JSON-LD")


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Expand ``doc`` and compact it against CANONICAL_CONTEXT; JsonLdError if it is invalid.

    The result uses AS2 short names (``type``, ``id``, ``actor``, ``publicKey``...), has
    ``AS_PUBLIC`` for the public collection in to/cc/bto/bcc/audience however it was written, and
    no ``@context`` key. Single values are not wrapped in lists: read them with ``as_list``.
    Properties whose terms no known context defines are dropped. A document without
    ``@context`` is read as ActivityStreams. Bounding the size and nesting of ``doc`` is the
    caller's job (``bounds.check_document``); it runs in any thread.
    """
    if not isinstance(doc, dict):
        # A string would be dereferenced by pyld as a document URL.
        raise JsonLdError("JSON-LD document must be an object")
    if "@context" not in doc:
        # AS2-core §2.1.3: a document without a context is read with the normative
        # ActivityStreams context.
        doc = {"@context": _AS, **doc}
    # Outside the try: a failure here is our bug (or a pyld upgrade), not bad input.
    _thread_safe_caches()
    terms = _canonical_terms()
    try:
        expanded = _pyld.expand(doc, _options())
        prepared = _coerce(expanded, terms)
        compacted = _pyld.compact(prepared, CANONICAL_CONTEXT, _options(skipExpansion=True))
    except Exception as exc:  # see _SAFE_CODE: pyld fails in many ways
        raise _error(exc) from exc
    if not isinstance(compacted, dict):
        raise JsonLdError("invalid JSON-LD")
    compacted.pop("@context", None)
    _fix_public(compacted)
    return compacted


async def normalise_off_loop(doc: dict[str, Any]) -> dict[str, Any]:
    """``normalise`` in a worker thread: JSON-LD work never runs on the event loop.

    The caller must have bounded ``doc`` (``bounds.check_document``) first: a thread does not
    make unbounded work cheap, it only keeps the server answering while it happens.
    """
    return await anyio.to_thread.run_sync(normalise, doc)


def as_list(value: object) -> list[Any]:
    """A property value as a list: JSON-LD allows a single value wherever a set is meant."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def id_of(value: object) -> str | None:
    """The IRI a property value refers to: a bare IRI, an object's ``id`` or a Link's ``href``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("id", "href"):
            ref = value.get(key)
            if isinstance(ref, str):
                return ref
    return None
