// Node 20 compatibility shim for Fedify 2.3.x.
//
// Fedify declares `engines.node >= 22`.  The only Node 21+ global it touches
// is `navigator` (added to Node in v21): e.g. `importJwk()` for Ed25519 keys
// evaluates `navigator?.userAgent === "Cloudflare-Workers"`.  Optional
// chaining does not protect an *undeclared* identifier, so on Node 20 that
// throws `ReferenceError: navigator is not defined`.  Defining a minimal
// `navigator` before anything from Fedify runs is enough; the rest of Fedify
// (WebCrypto incl. Ed25519, fetch, Request/Response, URLPattern polyfill,
// Temporal polyfill) works on Node 20 as is.
//
// This module must be imported before `@fedify/fedify` (ES modules are
// evaluated in import order).
if (typeof globalThis.navigator === "undefined") {
  Object.defineProperty(globalThis, "navigator", {
    value: { userAgent: `Node.js/${process.versions.node}` },
    configurable: true,
    writable: true,
    enumerable: false,
  });
}
