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
import dataclasses
import functools
import json
import logging
import math
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


def offline_options(**extra: Any) -> dict[str, Any]:
    """pyld options for readers that must refuse what they cannot read (Linked Data signatures).

    The loader is ``document_loader``, except that a context URL we do not bundle makes pyld fail
    (with our JsonLdError as a cause) instead of reading as empty. Never touches the network.
    """
    _thread_safe_caches()
    return _options(documentLoader=_offline_loader, **extra)


def _offline_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(url, str) or _lookup(url) is None:
        raise JsonLdError(f"JSON-LD context {str(url)[:100]!r} is not available offline")
    return document_loader(url, options)


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


# ---------------------------------------------------------------------------------------------
# The fast path.
#
# pyld's expand + compact costs milliseconds per document, and almost every document we receive
# names the same few contexts with the same few inline terms. For those documents the outcome of
# the full path can be predicted term by term: ``fast_normalise`` builds it directly from the JSON,
# following rules derived from pyld's own answers (term selection and IRI compaction against the
# canonical context) rather than written out by hand. Whatever the rules do not cover makes it
# return None and the document takes the full path, so the rules only have to be right for what
# they accept, never complete. tests/test_jsonld_fast_path.py and the reference leg compare both
# paths on generated and real documents.

# The context documents a fast-path document may name (as ``_lookup`` keys them). GoToSocial's
# table only defines plain, @id-typed and datatype-typed terms of its own namespace; the plan
# check below (not this list) is what proves a context safe, the list only keeps the fast path to
# contexts whose every definition we have read.
_SECURITY_V1 = "https://w3id.org/security/v1"
_GOTOSOCIAL = "https://gotosocial.org/ns"
_FAST_CONTEXTS = frozenset({_AS, _SECURITY_V1, _GOTOSOCIAL})

# A remote document's inline context is cached (as its JSON text) with what it means for the fast
# path. Larger contexts take the full path, so that hostile documents cannot fill the cache with
# megabytes of context text.
_PLAN_CACHE_SIZE = 256
_PLAN_KEY_MAX = 16_384

# Names the fast path accepts for inline terms, undefined properties and undefined type names:
# no ":" (a compact IRI or absolute IRI expands without the context) and no "@" (keywords).
_TERM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
# The local part of a compact IRI key ("diaspora:guid"): never "//", which makes it absolute.
_SUFFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
# Absolute http(s) IRIs with nothing an IRI may not contain; anything else is left to pyld.
_HTTP_IRI = re.compile(r"https?://[^\x00-\x20\x7f\"<>\\^`{|}]*\Z")
# BCP 47-shaped language map keys; pyld lowercases them.
_LANGUAGE_KEY = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*\Z")
# The parts of a processed term definition the fast path understands; any other (a scoped
# @context, @nest, @index, @language, @direction, @prefix...) makes the term unusable.
_DEFINITION_KEYS = frozenset(
    {"reverse", "protected", "_prefix", "_term_has_colon", "@id", "@type", "@container"}
)
# Active-context entries that are bookkeeping rather than meaning.
_CONTEXT_BOOKKEEPING = frozenset({"mappings", "_uuid", "inverse"})
# Sample values for asking pyld which term it would pick; never part of a result.
_SAMPLE_IRI = "https://fast-path.invalid/sample"
_SAMPLE_TYPE = "https://fast-path.invalid/Sample"


class _Ineligible(Exception):
    """Raised while building a fast result: this document needs the full path."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    """How the full path compacts the values of one property of the document's context.

    ``slot`` identifies the expanded property (its IRI, with a marker for language maps): two
    keys of one node in the same slot are merged by expansion, which the fast path does not
    reproduce. ``out`` is the key the value gets in the result (None: the full path drops it).
    """

    out: str | None
    slot: str | None
    kind: str = "value"  # "value", "id", "type" or "language"
    refs: bool = False  # strings are IRIs ("@type": "@id")
    collapse: bool = False  # a node reference compacts to its bare IRI (canonical @id terms)
    strings: bool = True  # strings are accepted (IRIs if refs)
    numbers: bool = True  # numbers and booleans are accepted
    nodes: bool = True  # objects are accepted
    empty: bool = True  # an empty array stays under this key (term selection sees no value)
    as_list: bool = False  # always an array (@set or @list container in the canonical context)
    wrap_list: bool = False  # {"@list": [...]}: a list the canonical context has no term for
    plain: str | None = None  # language maps: the term their untagged values compact to
    datatype: str | None = None  # values become {"type": datatype, "@value": ...} objects


_UNDEFINED = _Rule(out=None, slot=None)


@dataclasses.dataclass(frozen=True, slots=True)
class _Canonical:
    """What the fast path needs to know about CANONICAL_CONTEXT, derived from pyld once."""

    mappings: dict[str, Any]
    attributes: dict[str, Any]
    rules: dict[str, _Rule]
    types: dict[str, str]  # canonical term used as a type name -> what it compacts to
    iris: frozenset[str]
    # Every IRI of the canonical context: an @id value starting with one may compact to a
    # compact IRI ("as:Public", "toot:...") instead of staying as written.
    prefixes: tuple[str, ...]
    id_key: str
    type_key: str
    value_key: str
    public: str  # what the public collection's IRI compacts to
    compact: Any  # (iri, value, vocab) -> the key or IRI pyld compacts it to


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """What one document context means for the fast path (cached per context)."""

    rules: dict[str, _Rule]  # terms whose values the fast path can compact
    defined: frozenset[str]  # every term the context defines, usable or not
    types: dict[str, str]  # term used as a type name -> what the full path compacts it to
    prefixes: dict[str, str]  # terms that expand compact IRIs ("diaspora:guid") -> their IRI


def _attributes(active: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in active.items() if k not in _CONTEXT_BOOKKEEPING}


@functools.cache
def _canonical() -> _Canonical | None:
    """The canonical context as pyld processes it, or None if it has a shape we do not expect.

    Then the fast path is off and every document takes the full path: a pyld upgrade that
    changes these internals costs speed, never correctness.
    """
    _thread_safe_caches()
    try:
        return _build_canonical()
    except Exception:
        logger.exception("JSON-LD fast path disabled: unexpected canonical context")
        return None


def _build_canonical() -> _Canonical | None:
    processor = _pyld.JsonLdProcessor()
    options = _options()
    active = processor.process_context(
        processor._get_initial_context(options), CANONICAL_CONTEXT, options
    )
    attributes = _attributes(active)
    mappings: dict[str, Any] = active["mappings"]

    def compact(iri: str, value: Any = None, vocab: bool = True) -> str | None:
        try:
            result = processor._compact_iri(active, iri, value=value, vocab=vocab)
        except Exception:  # "IRI confused with prefix" and the like: not for the fast path
            return None
        return result if isinstance(result, str) else None

    iris = frozenset(
        d["@id"]
        for d in mappings.values()
        if d and isinstance(d.get("@id"), str) and not d["@id"].startswith("@")
    )
    # The rules below assume what makes compaction of foreign keys and http(s) IRIs simple: no
    # canonical term is itself a compact IRI, none is named like a URL scheme we accept, no
    # canonical IRI is a blank node, and the @vocab that undefined terms expand with is "_:".
    if (
        any(":" in term for term in mappings)
        or {"http", "https"} & set(mappings)
        or any(iri.startswith("_:") for iri in iris)
        or attributes.get("@vocab") != "_:"
        or compact("Public", vocab=False) != "Public"
        or mappings.get("as", {}).get("@id", "") + "Public" != AS_PUBLIC
    ):
        return None
    id_key, type_key, value_key = compact("@id"), compact("@type"), compact("@value")
    public = compact(AS_PUBLIC, vocab=False)
    if id_key is None or type_key is None or value_key is None or public is None:
        return None
    rules: dict[str, _Rule] = {}
    for term, definition in mappings.items():
        rule = _canonical_rule(term, definition, compact, id_key, type_key)
        if rule is not None:
            rules[term] = rule
    # A language map's untagged values go to its plain term, which must be usable for strings.
    for term, rule in list(rules.items()):
        if rule.kind == "language":
            plain = rules.get(rule.plain or "")
            if plain is None or plain.kind != "value" or not plain.strings or plain.refs:
                del rules[term]
    types = {
        term: compacted
        for term, definition in mappings.items()
        if definition
        and isinstance(definition.get("@id"), str)
        and not definition["@id"].startswith("@")
        and (compacted := compact(definition["@id"])) is not None
    }
    return _Canonical(
        mappings=mappings,
        attributes=attributes,
        rules=rules,
        types=types,
        iris=iris,
        prefixes=tuple(sorted(iris)),
        id_key=id_key,
        type_key=type_key,
        value_key=value_key,
        public=public,
        compact=compact,
    )


def _canonical_rule(
    term: str, definition: Any, compact: Any, id_key: str, type_key: str
) -> _Rule | None:
    """The rule for a canonical term, from the terms pyld selects for sample values.

    A shape of value is accepted only if compaction puts it back under this same term; so
    ``expiration`` (which compacts to ``expires``) and ``items``/``orderedItems`` clashes are
    left to the full path.
    """
    if not definition or set(definition) - _DEFINITION_KEYS or definition.get("reverse"):
        return None
    iri = definition.get("@id")
    if iri == "@id":
        return _Rule(out=id_key, slot="@id", kind="id") if term == id_key else None
    if iri == "@type":
        return _Rule(out=type_key, slot="@type", kind="type") if term == type_key else None
    if not isinstance(iri, str) or iri.startswith("@"):
        return None
    datatype = definition.get("@type")
    container = definition.get("@container") or []

    def picks(samples: list[Any]) -> bool:
        return all(compact(iri, sample) == term for sample in samples)

    if container == ["@language"]:
        if datatype is not None or not picks([{"@value": "s", "@language": "en"}]):
            return None
        plain = compact(iri, {"@value": "s"})
        return _Rule(out=term, slot=iri + " @language", kind="language", plain=plain)
    if container not in ([], ["@set"], ["@list"]):
        return None
    nodes = [{"@id": _SAMPLE_IRI, "@type": [_SAMPLE_TYPE]}, {"@type": [_SAMPLE_TYPE]}]
    numbers: list[Any]
    if datatype == "@id":
        strings: list[Any] = [{"@id": _SAMPLE_IRI}]
        numbers = []
    elif datatype is None:
        strings = [{"@value": "s"}]
        numbers = [{"@value": 1}, {"@value": 1.5}, {"@value": True}]
        nodes.append({"@id": _SAMPLE_IRI})
    elif isinstance(datatype, str) and not datatype.startswith("@"):
        strings = [{"@value": "s", "@type": datatype}]
        numbers = [{"@value": v, "@type": datatype} for v in (1, 1.5, True)]
        nodes = []
    else:
        return None
    if container == ["@list"]:
        # Only lists of references and objects (orderedItems): always an array.
        if datatype != "@id":
            return None
        lists = [[], strings, nodes[:1], strings + nodes]
        if not picks([{"@list": items} for items in lists]):
            return None
        return _Rule(out=term, slot=iri, refs=True, collapse=True, numbers=False, as_list=True)
    ok_strings = picks(strings)
    ok_numbers = bool(numbers) and picks(numbers)
    ok_nodes = bool(nodes) and picks(nodes)
    ok_empty = picks([[]])
    if not (ok_strings or ok_numbers or ok_nodes or ok_empty):
        return None
    return _Rule(
        out=term,
        slot=iri,
        refs=datatype == "@id",
        collapse=datatype == "@id",
        strings=ok_strings,
        numbers=ok_numbers,
        nodes=ok_nodes,
        empty=ok_empty,
        as_list=container == ["@set"],
    )


def _context_is_plain(context: Any) -> bool:
    """Only fast-path context URLs (ActivityStreams among them) and plain inline term maps.

    Inline maps may define terms as strings or as objects with @id, @type and @container only:
    no @vocab, @language, @base, @version, @import, @protected, scoped contexts or @reverse.
    """
    entries = context if type(context) is list else [context]
    named: set[str | None] = set()
    for entry in entries:
        if type(entry) is str:
            name = _lookup(entry)
            if name not in _FAST_CONTEXTS:
                return False
            named.add(name)
        elif type(entry) is dict:
            for term, definition in entry.items():
                if type(term) is not str or not _TERM_NAME.match(term):
                    return False
                if type(definition) is str:
                    continue
                if (
                    type(definition) is not dict
                    or not definition
                    or set(definition) - {"@id", "@type", "@container"}
                    or any(type(v) is not str for v in definition.values())
                ):
                    return False
        else:
            return False
    return _AS in named


def _plan(context: Any) -> _Plan | None:
    try:
        key = json.dumps(context, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    if len(key) > _PLAN_KEY_MAX:
        return None
    return _plan_for(key)


@functools.lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _plan_for(key: str) -> _Plan | None:
    """Process a document's context with pyld and compare it with the canonical one.

    Every term the context shares with the canonical context must be defined identically (a
    redefinition, even of a term the document does not use, sends it to the full path); its
    other terms ("foreign" ones, such as Mastodon's ``atomUri``) get a rule of their own if
    their definition is simple enough.
    """
    context = json.loads(key)
    canon = _canonical()
    if canon is None or not _context_is_plain(context):
        return None
    processor = _pyld.JsonLdProcessor()
    options = _options()
    try:
        active = processor.process_context(
            processor._get_initial_context(options), context, options
        )
    except Exception:  # invalid context: the full path reports it
        return None
    if _attributes(active) != canon.attributes:
        return None
    mappings: dict[str, Any] = active["mappings"]
    if mappings.get("as") != canon.mappings.get("as"):
        return None  # "as:Public" must expand to the public collection
    rules: dict[str, _Rule] = {}
    types: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for term, definition in mappings.items():
        if not definition or set(definition) - _DEFINITION_KEYS or definition.get("reverse"):
            return None
        iri = definition.get("@id")
        if not isinstance(iri, str):
            return None
        rule: _Rule | None
        if term in canon.mappings:
            if definition != canon.mappings[term]:
                return None
            rule = canon.rules.get(term)
        elif iri.startswith("@"):
            return None  # a keyword alias the canonical context does not have
        elif _TERM_NAME.match(term):
            rule = _foreign_rule(canon, iri, definition.get("@type"), definition.get("@container"))
        else:
            rule = None
        if rule is not None:
            rules[term] = rule
        if not iri.startswith("@"):
            compacted = canon.types.get(term) if term in canon.mappings else _compact_vocab(iri)
            if compacted is not None:
                types[term] = compacted
            if definition.get("_prefix") and term != "_":
                prefixes[term] = iri
    return _Plan(rules=rules, defined=frozenset(mappings), types=types, prefixes=prefixes)


def _foreign_rule(canon: _Canonical, iri: str, datatype: Any, container: Any) -> _Rule | None:
    """A rule for a property only the document defines, if compaction treats it simply.

    Its IRI must have no canonical term, so compaction writes it as a compact IRI (or the IRI
    itself) whatever the value; that key is undefined in the canonical context, so an @id value
    stays an object ({"id": ...}), a @list stays {"@list": [...]} and a datatype-typed value a
    {"type": ..., "@value": ...} object.
    """
    if (
        ":" not in iri
        or iri.startswith("_:")
        or iri in canon.iris
        or container not in (None, ["@list"])
    ):
        return None
    out = _compact_vocab(iri)
    if out is None or ":" not in out or out.startswith("@") or out in canon.mappings:
        return None
    if datatype in (None, "@id"):
        return _Rule(
            out=out,
            slot=iri,
            refs=datatype == "@id",
            numbers=datatype is None,
            wrap_list=container is not None,
        )
    if not isinstance(datatype, str) or datatype.startswith("@") or container is not None:
        return None
    compacted = _compact_vocab(datatype)
    if compacted is None:
        return None
    return _Rule(out=out, slot=iri, nodes=False, datatype=compacted)


@functools.lru_cache(maxsize=4096)
def _compact_vocab(iri: str) -> str | None:
    """What compaction writes a property or type IRI as (pyld scans every canonical term)."""
    canon = _canonical()
    return None if canon is None else canon.compact(iri)


@functools.lru_cache(maxsize=1024)
def _prefixed_rule(iri: str) -> _Rule | None:
    """The rule for a compact IRI key ("diaspora:guid") that expands to ``iri``."""
    canon = _canonical()
    return None if canon is None else _foreign_rule(canon, iri, None, None)


def _key_rule(key: Any, plan: _Plan) -> _Rule:
    """The rule for a key the document's context has no term for.

    A plain name expands with the AS2 "@vocab": "_:" to a blank-node property, which _coerce
    drops; its value is still expanded (and may be invalid), so it is checked like any other
    value and then discarded. A compact IRI whose prefix the context defines expands to that
    prefix's IRI and is compacted like a foreign term.
    """
    if type(key) is not str or key in plan.defined:
        raise _Ineligible
    if _TERM_NAME.match(key):
        return _UNDEFINED
    prefix, colon, suffix = key.partition(":")
    base = plan.prefixes.get(prefix) if colon else None
    if base is None or not _SUFFIX.match(suffix):
        raise _Ineligible
    rule = _prefixed_rule(base + suffix)
    if rule is None:
        raise _Ineligible
    return rule


def fast_normalise(doc: Any) -> dict[str, Any] | None:
    """``normalise_full(doc)``, computed without pyld; None if ``doc`` is not eligible.

    Eligible: the @context (ActivityStreams if absent) names only the ActivityStreams, security
    v1 and GoToSocial contexts plus plain inline terms, redefines no canonical term, and the body
    uses only shapes the rules cover (see ``_Rule``, ``_fast_node``). None means nothing more
    than "ask pyld": the full path may still accept or reject the document.
    """
    if type(doc) is not dict or "type" not in doc:
        return None
    plan = _plan(doc.get("@context", _AS))
    canon = _canonical()
    if plan is None or canon is None:
        return None
    try:
        result = _fast_node(doc, plan, canon, top=True)
    except (_Ineligible, RecursionError):
        return None
    _fix_public(result)
    return result


def _fast_node(
    node: dict[str, Any], plan: _Plan, canon: _Canonical, *, top: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    slots: set[str] = set()
    maps: list[tuple[_Rule, str]] = []
    for key, value in node.items():
        if top and key == "@context":
            continue
        rule = plan.rules.get(key) or _key_rule(key, plan)
        if rule.slot is not None:
            if rule.slot in slots:
                raise _Ineligible
            slots.add(rule.slot)
        if rule.kind == "id":
            if type(value) is not str:
                raise _Ineligible
            out[canon.id_key] = _fast_iri(value, canon)
        elif rule.kind == "type":
            out[rule.out or ""] = _fast_types(value, plan, canon)
        elif value is None:
            continue  # expansion drops null values, and so the property
        elif rule.kind == "language":
            compacted, first = _fast_language_map(value)
            out[rule.out or ""] = compacted
            maps.append((rule, first))
        else:
            compacted = _fast_value(value, rule, plan, canon)
            if rule.out is not None:
                out[rule.out] = compacted
    for rule, first in maps:
        # _coerce: tagged values without any untagged one also give the plain term a value.
        plain = rule.plain or ""
        if plain not in plan.rules:
            raise _Ineligible
        written = node.get(plain)
        if written is None:
            out[plain] = first
        elif type(written) is list:
            if not written or any(type(v) is not str for v in written):
                raise _Ineligible
        elif type(written) is not str:
            raise _Ineligible
    return out


def _fast_iri(value: str, canon: _Canonical) -> str:
    """An @id value as compaction writes it: unchanged unless a canonical prefix applies."""
    if value == "Public":
        return value  # relative (there is no base IRI), and kept as written
    if value == "as:Public" or value == AS_PUBLIC:
        return canon.public
    if not _HTTP_IRI.match(value) or value.startswith(canon.prefixes):
        raise _Ineligible
    return value


def _fast_types(value: Any, plan: _Plan, canon: _Canonical) -> Any:
    names = [value] if type(value) is str else value
    if type(names) is not list or not names:
        raise _Ineligible
    out: list[str] = []
    for name in names:
        if type(name) is not str:
            raise _Ineligible
        compacted = plan.types.get(name)
        if compacted is None:
            # An undefined type name expands to "_:Name" and compacts back to "Name", unless
            # the canonical context has a term of that name.
            if name in plan.defined or name in canon.mappings or not _TYPE_NAME.match(name):
                raise _Ineligible
            compacted = name
        out.append(compacted)
    return out[0] if len(out) == 1 else out


def _fast_language_map(value: Any) -> tuple[dict[str, Any], str]:
    """A language map as compaction writes it, and the first value expansion meets."""
    if type(value) is not dict or not value:
        raise _Ineligible
    out: dict[str, Any] = {}
    first: str | None = None
    if any(type(key) is not str for key in value):
        raise _Ineligible
    for key in sorted(value):  # pyld expands language maps in key order
        language = key.lower()
        if not _LANGUAGE_KEY.match(key) or language == "und" or language in out:
            raise _Ineligible
        texts = value[key]
        if type(texts) is str:
            texts = [texts]
        if type(texts) is not list or not texts or any(type(t) is not str for t in texts):
            raise _Ineligible
        out[language] = texts[0] if len(texts) == 1 else list(texts)
        if first is None:
            first = texts[0]
    if first is None:
        raise _Ineligible
    return out, first


def _fast_value(value: Any, rule: _Rule, plan: _Plan, canon: _Canonical) -> Any:
    if type(value) is list:
        if not value and not rule.empty:
            raise _Ineligible  # "published": [] compacts to "as:published": []
        items = [_fast_item(item, rule, plan, canon) for item in value]
    else:
        items = [_fast_item(value, rule, plan, canon)]
    if rule.wrap_list:
        return {"@list": items}
    if rule.as_list or len(items) != 1:
        return items
    return items[0]


def _fast_item(value: Any, rule: _Rule, plan: _Plan, canon: _Canonical) -> Any:
    kind = type(value)
    if kind is str:
        if rule.refs:
            iri = _fast_iri(value, canon)
            return iri if rule.collapse else {canon.id_key: iri}
        if not rule.strings:
            raise _Ineligible
        if rule.datatype is not None:
            return {canon.type_key: rule.datatype, canon.value_key: value}
        return value
    if kind is bool or kind is int or (kind is float and math.isfinite(value)):
        if rule.refs or not rule.numbers:
            raise _Ineligible
        if rule.datatype is not None:
            return {canon.type_key: rule.datatype, canon.value_key: value}
        return value
    if kind is dict:
        if not rule.nodes:
            raise _Ineligible
        compacted = _fast_node(value, plan, canon)
        if not compacted:
            raise _Ineligible
        if rule.collapse and compacted.keys() == {canon.id_key}:
            return compacted[canon.id_key]
        return compacted
    # null inside an array, nested arrays, anything that is not JSON.
    raise _Ineligible


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Expand ``doc`` and compact it against CANONICAL_CONTEXT; JsonLdError if it is invalid.

    The result uses AS2 short names (``type``, ``id``, ``actor``, ``publicKey``...), has
    ``AS_PUBLIC`` for the public collection in to/cc/bto/bcc/audience however it was written, and
    no ``@context`` key. Single values are not wrapped in lists: read them with ``as_list``.
    Properties whose terms no known context defines are dropped. A document without
    ``@context`` is read as ActivityStreams. Bounding the size and nesting of ``doc`` is the
    caller's job (``bounds.check_document``); it runs in any thread.

    Documents in the common shapes take ``fast_normalise``, everything else ``normalise_full``;
    both give the same answer. A signed activity's FEP-8b32 proofs are left out of the answer
    (``_without_proofs``), so that it can take the fast path too.
    """
    fast = fast_normalise(doc)
    if fast is not None:
        return fast
    unproven = _without_proofs(doc)
    if unproven is not None:
        fast = fast_normalise(unproven)
        if fast is not None:
            return fast
    return normalise_full(doc)


# The data-integrity contexts (FEP-8b32) define only id and type (as ActivityStreams does),
# `proof` and `DataIntegrityProof`.
_DATA_INTEGRITY = frozenset(
    {"https://w3id.org/security/data-integrity/v1", "https://w3id.org/security/data-integrity/v2"}
)


def _without_proofs(doc: Any) -> dict[str, Any] | None:
    """``doc`` without its FEP-8b32 proofs, the form ``normalise`` reads a signed activity in,
    or None when that would change more than the proofs.

    A proof is there to be checked on the JSON as it arrived (server/activitypub/proofs.py);
    nothing reads it from the normalised document. Taking the proofs off (the activity's and
    its embedded object's) together with the data-integrity contexts that only define them
    lets a signed activity take the fast path: with one of those contexts it never could. The
    object's own @context, once those are gone, may only repeat ActivityStreams, which the
    fast path requires of the document anyway, so dropping it changes nothing.
    """
    if type(doc) is not dict or "proof" not in doc:
        return None
    contexts = doc.get("@context")
    if type(contexts) is not list or not _DATA_INTEGRITY.intersection(
        c for c in contexts if type(c) is str
    ):
        return None
    out = {k: v for k, v in doc.items() if k != "proof"}
    out["@context"] = [c for c in contexts if not (type(c) is str and c in _DATA_INTEGRITY)]
    obj = out.get("object")
    if type(obj) is dict and ("proof" in obj or "@context" in obj):
        inner = obj.get("@context", _AS)
        inner_list = inner if type(inner) is list else [inner]
        rest = [c for c in inner_list if not (type(c) is str and c in _DATA_INTEGRITY)]
        if rest not in ([_AS], []):
            return None
        out["object"] = {k: v for k, v in obj.items() if k not in ("proof", "@context")}
    # Anything else of data integrity's (a proof further down, its type named elsewhere) would
    # lose its meaning with the context: leave such a document to the full path.
    try:
        text = json.dumps(out, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    if '"proof"' in text or "DataIntegrityProof" in text:
        return None
    return out


def normalise_full(doc: dict[str, Any]) -> dict[str, Any]:
    """``normalise`` through pyld: expand, ``_coerce``, compact against CANONICAL_CONTEXT.

    The reference behaviour: ``fast_normalise`` must give exactly this answer when it gives one.
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
