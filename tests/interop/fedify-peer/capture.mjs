// Wraps globalThis.fetch so that every HTTP request Fedify (or this peer)
// makes is recorded: method, URL, which HTTP signature scheme it carried,
// the response status, and the attempt number.  Fedify calls the global
// `fetch` identifier at call time, so wrapping it here (imported before
// Fedify) sees all of its traffic: inbox deliveries (POST, double-knocking),
// signed GETs of actors/keys/objects, and WebFinger lookups.
//
// It also rewrites `https://` WebFinger / host-meta lookups aimed at loopback
// hosts to `http://`: Fedify's WebFinger client always uses https for
// `acct:` URIs, while the servers under test listen on plain-http loopback.

import { createHash } from "node:crypto";

export const outgoing = [];
// One sequence shared by all logs (outgoing requests, incoming requests,
// received activities) so `?since=N` means the same point in time for all.
let seq = 0;
export function nextSeq() {
  return ++seq;
}
export function currentSeq() {
  return seq;
}

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

export function isLoopbackHost(hostname) {
  return LOOPBACK_HOSTS.has(hostname) || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Classifies the HTTP signature carried by a set of headers. */
export function signatureInfo(headers) {
  const get = (n) => (typeof headers.get === "function" ? headers.get(n) : headers[n.toLowerCase()]) ?? null;
  const sigInput = get("signature-input");
  const sig = get("signature");
  if (sigInput != null) {
    const m = /keyid="([^"]*)"/i.exec(sigInput);
    const comps = /=\(([^)]*)\)/.exec(sigInput);
    return {
      scheme: "rfc9421",
      keyId: m?.[1] ?? null,
      components: comps ? comps[1].split(/\s+/).filter(Boolean).map((s) => s.replace(/"/g, "")) : null,
      params: sigInput,
    };
  }
  if (sig != null) {
    const m = /keyId="([^"]*)"/.exec(sig);
    const h = /headers="([^"]*)"/.exec(sig);
    return {
      scheme: "draft-cavage",
      keyId: m?.[1] ?? null,
      components: h ? h[1].split(/\s+/).filter(Boolean) : null,
      params: sig.replace(/signature="[^"]*"/, 'signature="…"'),
    };
  }
  return { scheme: "none", keyId: null, components: null, params: null };
}

const realFetch = globalThis.fetch;

function sha256(buf) {
  return createHash("sha256").update(Buffer.from(buf)).digest("hex");
}

async function capturingFetch(input, init) {
  let request = new Request(input, init);
  let rewrittenFrom = null;
  const url0 = new URL(request.url);
  if (
    url0.protocol === "https:" && isLoopbackHost(url0.hostname) &&
    url0.pathname.startsWith("/.well-known/")
  ) {
    rewrittenFrom = request.url;
    url0.protocol = "http:";
    request = new Request(url0.href, {
      method: request.method,
      headers: request.headers,
      redirect: request.redirect,
      signal: request.signal,
    });
  }
  let body = null;
  if (request.body != null) {
    try {
      body = await request.clone().arrayBuffer();
    } catch {
      body = null;
    }
  }
  const bodyHash = body == null ? "" : sha256(body);
  const now = Date.now();
  // Attempt number: earlier requests with the same method+URL+body.  For
  // bodies (POST) this is exact because activity ids are unique; for GETs
  // only requests in the last 5 s count, so repeated lookups minutes apart
  // start again at 1 while a double-knock retry becomes attempt 2.
  const prior = outgoing.filter((e) =>
    e.method === request.method && e.url === request.url && e._bodyHash === bodyHash &&
    (body != null || now - e._t < 5000)
  );
  const sig = signatureInfo(request.headers);
  const entry = {
    seq: nextSeq(),
    time: new Date(now).toISOString(),
    method: request.method,
    url: request.url,
    attempt: prior.length + 1,
    scheme: sig.scheme,
    keyId: sig.keyId,
    signedComponents: sig.components,
    signatureParams: sig.params,
    accept: request.headers.get("accept"),
    userAgent: request.headers.get("user-agent"),
    contentType: request.headers.get("content-type"),
    status: null,
    error: null,
    previousScheme: prior.length ? prior[prior.length - 1].scheme : null,
    previousStatus: prior.length ? prior[prior.length - 1].status : null,
    rewrittenFrom,
    activityType: null,
    activityId: null,
    responseBody: null,
    _bodyHash: bodyHash,
    _t: now,
  };
  if (body != null && request.method === "POST") {
    try {
      const json = JSON.parse(new TextDecoder().decode(body));
      entry.activityType = json?.type ?? null;
      entry.activityId = json?.id ?? null;
      entry.hasLdSignature = json?.signature != null;
      entry.hasProof = json?.proof != null;
    } catch {
      /* not JSON */
    }
  }
  outgoing.push(entry);
  try {
    const response = await realFetch(request);
    entry.status = response.status;
    if (response.status >= 400) {
      try {
        entry.responseBody = (await response.clone().text()).slice(0, 1000);
      } catch {
        /* ignore */
      }
    }
    return response;
  } catch (error) {
    entry.error = String(error?.cause?.message ?? error?.message ?? error);
    throw error;
  }
}

globalThis.fetch = capturingFetch;

/** Returns the log without internal bookkeeping fields. */
export function outgoingLog() {
  return outgoing.map(({ _bodyHash, _t, ...rest }) => rest);
}

export { realFetch };
