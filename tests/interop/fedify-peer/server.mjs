// Independent fediverse peer built on Fedify, used by InterOcc's interop
// tests.  Usage:  node server.mjs --port PORT   (PORT 0 = pick a free one)
// Prints exactly one line `READY http://127.0.0.1:<port>` to stdout once it
// listens; everything else (logs) goes to stderr.  See README.md.

import "./polyfill.mjs"; // must come first: Node 20 `navigator` shim
import { currentSeq, nextSeq, outgoingLog, outgoing, signatureInfo } from "./capture.mjs"; // wraps fetch

import http from "node:http";
import { AsyncLocalStorage } from "node:async_hooks";
import { readFileSync } from "node:fs";
import { trace } from "@opentelemetry/api";
import { Temporal } from "@js-temporal/polyfill";
import { configure, defaultTextFormatter, compareLogLevel } from "@logtape/logtape";
import {
  createExponentialBackoffPolicy,
  createFederation,
  generateCryptoKeyPair,
  InProcessMessageQueue,
  MemoryKvStore,
  detachSignature,
  SendActivityError,
  signRequest,
  verifyJsonLd,
  verifyObject,
  verifyProof,
  verifyRequestDetailed,
} from "@fedify/fedify";
import {
  Accept,
  Activity,
  Announce,
  Create,
  Delete,
  Endpoints,
  Follow,
  isActor,
  Like,
  Mention,
  Move,
  Note,
  Object as ASObject,
  Person,
  PUBLIC_COLLECTION,
  Reject,
  Tombstone,
  Undo,
  Update,
} from "@fedify/vocab";

const T0 = performance.now();
const FEDIFY_VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/@fedify/fedify/package.json", import.meta.url), "utf8"),
).version;

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const opts = {
    port: 0,
    host: "127.0.0.1",
    username: "alice",
    logLevel: process.env.FEDIFY_PEER_LOG_LEVEL ?? "warning",
    followPolicy: "accept",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === "--port") opts.port = Number(next());
    else if (a.startsWith("--port=")) opts.port = Number(a.slice(7));
    else if (a === "--username") opts.username = next();
    else if (a === "--log-level") opts.logLevel = next();
    else if (a === "--follow-policy") opts.followPolicy = next();
    else if (a === "--exit-with-stdin") opts.exitWithStdin = true;
    else if (a === "--help" || a === "-h") {
      process.stderr.write(
        "usage: node server.mjs --port PORT [--username alice] " +
          "[--log-level debug|info|warning|error] [--follow-policy accept|reject|ignore] " +
          "[--exit-with-stdin]\n",
      );
      process.exit(0);
    } else throw new Error(`unknown argument: ${a}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`invalid --port`);
  }
  if (!["accept", "reject", "ignore"].includes(opts.followPolicy)) {
    throw new Error(`invalid --follow-policy`);
  }
  return opts;
}
let OPTS;
try {
  OPTS = parseArgs(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`server.mjs: ${error.message} (see --help)\n`);
  process.exit(2);
}
const USERNAME = OPTS.username;

// ---------------------------------------------------------------- logging
// Logs go to stderr (stdout carries only the READY line) and into a ring
// buffer exposed at GET /_control/logs.
const LOG_RING = [];
const LOG_RING_MAX = 2000;
await configure({
  contextLocalStorage: new AsyncLocalStorage(),
  sinks: {
    stderr: (record) => {
      if (compareLogLevel(record.level, OPTS.logLevel) >= 0) {
        process.stderr.write(defaultTextFormatter(record));
      }
    },
    ring: (record) => {
      LOG_RING.push({
        time: new Date(record.timestamp).toISOString(),
        level: record.level,
        category: record.category.join("."),
        message: defaultTextFormatter(record).trimEnd().slice(0, 4000),
      });
      if (LOG_RING.length > LOG_RING_MAX) LOG_RING.splice(0, LOG_RING.length - LOG_RING_MAX);
    },
  },
  loggers: [
    { category: ["fedify"], lowestLevel: "debug", sinks: ["stderr", "ring"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

// ---------------------------------------------------------------- state
const state = {
  followPolicy: OPTS.followPolicy,
  activities: [], // received activities
  incoming: [], // every non-control HTTP request served
  errors: [], // inbox listener / outbox errors
  followers: new Map(), // actor id -> { id, inbox, sharedInbox, followId }
  following: new Map(), // target actor id -> { followId, status, inbox, ... }
  objects: new Map(), // id -> vocab object created by alice (served by dispatchers)
  notes: [], // ids of alice's notes, newest last
  outbox: [], // ids of alice's Create activities, newest last
  moves: [], // Moves received, and what alice did about them (see onMove)
};

// Per-request store, so the inbox listeners (which Fedify calls inline in the
// request because there is no inbox queue) can see the raw request and the
// verification result Fedify reported.
const als = new AsyncLocalStorage();

// ---------------------------------------------------------------- tracing hook
// Fedify emits an OpenTelemetry span event "activitypub.activity.received"
// for every inbox POST with the attributes
//   activitypub.activity.verified, ld_signatures.verified,
//   http_signatures.verified, http_signatures.key_id,
//   http_signatures.failure_reason (unverified only)
// We give Fedify a TracerProvider that wraps the (no-op) global one and copies
// those attributes into the per-request store.  Nothing is exported anywhere.
function wrapSpan(span) {
  return new Proxy(span, {
    get(target, prop) {
      if (prop === "addEvent") {
        return (name, attrs, time) => {
          try {
            const store = als.getStore();
            if (store != null && name === "activitypub.activity.received") {
              store.received = { ...(attrs ?? {}) };
            }
          } catch {
            /* never break Fedify */
          }
          return target.addEvent(name, attrs, time);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
function wrapTracer(tracer) {
  return {
    startSpan(name, options, context) {
      return wrapSpan(tracer.startSpan(name, options, context));
    },
    startActiveSpan(...args) {
      const fn = args.pop();
      return tracer.startActiveSpan(...args, (span) => fn(wrapSpan(span)));
    },
  };
}
const baseTracerProvider = trace.getTracerProvider();
const tracerProvider = {
  getTracer(name, version, options) {
    return wrapTracer(baseTracerProvider.getTracer(name, version, options));
  },
};

// ---------------------------------------------------------------- keys
const rsaKeyPair = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
const ed25519KeyPair = await generateCryptoKeyPair("Ed25519");

// ---------------------------------------------------------------- HTTP server
const server = http.createServer((req, res) => {
  handleNodeRequest(req, res).catch((error) => {
    process.stderr.write(`request handling failed: ${error?.stack ?? error}\n`);
    if (!res.headersSent) {
      res.writeHead(500, { "content-type": "application/json" });
    }
    res.end(JSON.stringify({ error: String(error?.message ?? error) }));
  });
});
await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(OPTS.port, OPTS.host, resolve);
});
const PORT = server.address().port;
const BASE = `http://${OPTS.host}:${PORT}`;

// ---------------------------------------------------------------- federation
const federation = createFederation({
  kv: new MemoryKvStore(),
  origin: BASE,
  allowPrivateAddress: true,
  // Only the outbox is queued: the auto-Accept for a Follow is delivered
  // after the Follow's POST has been answered (as real servers do), instead
  // of while the sender is still waiting for its response.  The inbox is not
  // queued so listeners run inside the request (and can see its metadata).
  queue: { outbox: new InProcessMessageQueue() },
  outboxRetryPolicy: createExponentialBackoffPolicy({
    maxAttempts: 3,
    initialDelay: { seconds: 1 },
    maxDelay: { seconds: 4 },
    jitter: false,
  }),
  circuitBreaker: false,
  tracerProvider,
  onOutboxError: (error, activity) => {
    state.errors.push({
      seq: nextSeq(),
      time: new Date().toISOString(),
      where: "outbox",
      activityId: activity?.id?.href ?? null,
      error: String(error?.message ?? error),
      status: error instanceof SendActivityError ? error.statusCode : null,
    });
  },
  // Defaults deliberately kept: signature verification ON,
  // firstKnock "rfc9421" (double-knock to draft-cavage on >= 400),
  // signatureTimeWindow one hour.
});

federation
  .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
    if (identifier !== USERNAME) return null;
    const keys = await ctx.getActorKeyPairs(identifier);
    return new Person({
      id: ctx.getActorUri(identifier),
      preferredUsername: identifier,
      name: `${identifier[0].toUpperCase()}${identifier.slice(1)} (Fedify peer)`,
      summary: "Fedify interop peer for InterOcc tests.",
      url: ctx.getActorUri(identifier),
      inbox: ctx.getInboxUri(identifier),
      outbox: ctx.getOutboxUri(identifier),
      endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
      followers: ctx.getFollowersUri(identifier),
      following: ctx.getFollowingUri(identifier),
      manuallyApprovesFollowers: state.followPolicy !== "accept",
      publicKey: keys[0].cryptographicKey,
      assertionMethods: keys.map((k) => k.multikey),
    });
  })
  .setKeyPairsDispatcher((ctx, identifier) => {
    if (identifier !== USERNAME) return [];
    return [rsaKeyPair, ed25519KeyPair];
  })
  .mapHandle((ctx, username) => (username === USERNAME ? USERNAME : null));

federation.setFollowersDispatcher("/users/{identifier}/followers", (ctx, identifier) => {
  if (identifier !== USERNAME) return null;
  const items = [...state.followers.values()].map((f) => ({
    id: new URL(f.id),
    inboxId: f.inbox ? new URL(f.inbox) : null,
    endpoints: f.sharedInbox ? { sharedInbox: new URL(f.sharedInbox) } : null,
  }));
  return { items };
}).setCounter((ctx, identifier) => (identifier === USERNAME ? state.followers.size : null));

federation.setFollowingDispatcher("/users/{identifier}/following", (ctx, identifier) => {
  if (identifier !== USERNAME) return null;
  const items = [...state.following.values()]
    .filter((f) => f.status === "accepted")
    .map((f) => new URL(f.actor));
  return { items };
}).setCounter((ctx, identifier) =>
  identifier === USERNAME
    ? [...state.following.values()].filter((f) => f.status === "accepted").length
    : null
);

federation.setOutboxDispatcher("/users/{identifier}/outbox", (ctx, identifier) => {
  if (identifier !== USERNAME) return null;
  const items = state.outbox.map((id) => state.objects.get(id)).filter(Boolean).reverse();
  return { items };
}).setCounter((ctx, identifier) => (identifier === USERNAME ? state.outbox.length : null));

// Objects alice created are dereferenceable (signature not required).
const OBJECT_ROUTES = [
  [Note, "notes"],
  [Create, "create"],
  [Follow, "follow"],
  [Undo, "undo"],
  [Accept, "accept"],
  [Reject, "reject"],
  [Update, "update"],
  [Delete, "delete"],
  [Like, "like"],
  [Announce, "announce"],
];
for (const [cls, segment] of OBJECT_ROUTES) {
  federation.setObjectDispatcher(cls, `/users/{identifier}/${segment}/{id}`, (ctx, values) => {
    if (values.identifier !== USERNAME) return null;
    const obj = state.objects.get(ctx.getObjectUri(cls, values).href);
    return obj instanceof cls ? obj : null;
  });
}
function newObjectUri(ctx, cls) {
  return ctx.getObjectUri(cls, { identifier: USERNAME, id: crypto.randomUUID() });
}

federation.setNodeInfoDispatcher("/nodeinfo/2.1", () => ({
  software: { name: "interocc-fedify-peer", version: "2.3.6" },
  protocols: ["activitypub"],
  usage: { users: { total: 1 }, localPosts: state.notes.length, localComments: 0 },
}));

// ---------------------------------------------------------------- inbox
function typeName(activity, raw) {
  if (raw && typeof raw.type === "string") return raw.type;
  const t = activity?.constructor?.typeId?.href;
  return t ? t.replace(/^.*[#/]/, "") : null;
}

function verificationMethod(received) {
  if (received == null) return null;
  if (received["ld_signatures.verified"]) return "ld-signature";
  if (received["http_signatures.verified"]) return "http-signature";
  if (received["activitypub.activity.verified"]) return "object-integrity-proof";
  return null;
}

async function recordActivity(ctx, activity, { verified, reason = null }) {
  const store = als.getStore();
  const received = store?.received ?? null;
  let json = null;
  try {
    // Fedify's vocabulary parse of the body without its `signature`, written back out: what
    // its inbox parses on the proof and HTTP-signature paths.  On the Linked Data signature
    // path it parses its own compacted copy instead (whose JSON-LD, cached and returned by
    // toJsonLd(), spells terms its contexts lack as `as:sensitive`, `as:Hashtag`, …), so the
    // body is parsed again here: `json` has the same shape whichever check Fedify relied on.
    const raw = store?.bodyJson;
    let parsed = activity;
    if (raw != null && typeof raw === "object" && !Array.isArray(raw)) {
      try {
        parsed = await Activity.fromJsonLd(detachSignature(raw), ctx);
      } catch {
        parsed = activity; // what Fedify's inbox parsed, then
      }
    }
    json = await parsed.toJsonLd({ contextLoader: ctx.contextLoader });
  } catch (error) {
    json = { error: `toJsonLd failed: ${error?.message ?? error}` };
  }
  const entry = {
    seq: nextSeq(),
    receivedAt: new Date().toISOString(),
    note: await describeNote(ctx, activity),
    type: typeName(activity, store?.bodyJson),
    id: activity.id?.href ?? null,
    actor: activity.actorId?.href ?? null,
    object: activity.objectId?.href ?? null,
    inbox: store?.path ?? null,
    verified,
    verification: verified ? verificationMethod(received) : null,
    ldSignatureVerified: received ? Boolean(received["ld_signatures.verified"]) : null,
    httpSignatureVerified: received ? Boolean(received["http_signatures.verified"]) : null,
    httpSignatureKeyId: received?.["http_signatures.key_id"] || null,
    httpSignatureScheme: store?.signature?.scheme ?? null,
    httpSignatureRequestKeyId: store?.signature?.keyId ?? null,
    httpSignatureComponents: store?.signature?.components ?? null,
    unverifiedReason: reason,
    json,
    raw: store?.bodyJson ?? null,
    // The incoming[] entry of the request that carried it, and the peer's own checks of
    // its raw body (see ownChecks).
    requestSeq: store?.requestSeq ?? null,
    checks: store?.checks ?? null,
  };
  state.activities.push(entry);
  return entry;
}

// What Fedify's own vocabulary parser made of a Create/Update's Note: its content
// warning and its attachments read through the typed accessors (getAttachments(),
// Document.mediaType, .url, .name, .width, .height), not the raw JSON.
async function describeNote(ctx, activity) {
  if (!(activity instanceof Create || activity instanceof Update)) return null;
  try {
    const note = await activity.getObject(ctx);
    if (!(note instanceof Note)) return null;
    const attachments = [];
    for await (const a of note.getAttachments(ctx)) {
      const url = a.url;
      attachments.push({
        type: a.constructor?.name ?? null,
        mediaType: a.mediaType ?? null,
        url: url instanceof URL ? url.href : url?.href?.href ?? null,
        name: a.name?.toString() ?? null,
        width: a.width ?? null,
        height: a.height ?? null,
      });
    }
    return {
      id: note.id?.href ?? null,
      summary: note.summary?.toString() ?? null,
      sensitive: note.sensitive ?? null,
      attachments,
    };
  } catch (error) {
    return { error: String(error?.message ?? error) };
  }
}

// ---------------------------------------------------------------- the peer's own checks
// Fedify's inbox stops at the first check that holds (Linked Data signature, then Object
// Integrity Proof, then the HTTP signature) and reports only which one it was.  So that a
// test can see every verdict, the peer also runs Fedify's exported verification functions
// itself on the raw body of every POST to an inbox, just before handing the request to
// Fedify (so by the time the sender has its answer, the checks are recorded):
//   httpSignature: verifyRequestDetailed() on the request as received;
//   ldSignature:   verifyJsonLd() on the body (RsaSignature2017; the key's owner must be the
//                  actor, as in Fedify's inbox);
//   proof:         verifyObject(Activity, body without `signature`), as Fedify's inbox
//                  does, plus verifyProof() for each proof to name its key's controller;
//   objectProof:   verifyObject(Object, body.object) when the object is embedded (a Note
//                  signed by its author; `present: false` when it has no proof of its own).
// Keys are fetched with alice's signed document loader, memoised per request; `fetched`
// lists the URLs these checks loaded (they show up in outgoing[] too).
const INBOX_PATH = /^\/(users\/[^/]+\/)?inbox$/;

function errorText(error) {
  return String(error?.message ?? error).slice(0, 500);
}

function recordingLoader(base, fetched) {
  const memo = new Map();
  return async (url, options) => {
    let loaded = memo.get(url);
    if (loaded == null) {
      fetched.push(url);
      loaded = Promise.resolve(base(url, options));
      memo.set(url, loaded);
    }
    return structuredClone(await loaded);
  };
}

function asList(value) {
  if (value == null) return [];
  return Array.isArray(value) ? value : [value];
}

async function checkHttpSignature(request, options) {
  const result = { present: false, verified: null, keyId: null, owner: null, reason: null };
  if (!request.headers.has("signature") && !request.headers.has("signature-input")) return result;
  result.present = true;
  try {
    const verdict = await verifyRequestDetailed(request, options);
    result.verified = verdict.verified === true;
    if (result.verified) {
      result.keyId = verdict.key?.id?.href ?? null;
      result.owner = verdict.key?.ownerId?.href ?? null;
    } else {
      result.keyId = verdict.reason?.keyId?.href ?? null;
      result.reason = verdict.reason?.type ?? null;
    }
  } catch (error) {
    result.verified = false;
    result.reason = errorText(error);
  }
  return result;
}

async function checkLdSignature(json, options) {
  const sig = json.signature;
  const result = {
    present: sig != null,
    type: sig?.type ?? null,
    creator: sig?.creator ?? null,
    verified: null,
    error: null,
  };
  if (!result.present) return result;
  try {
    result.verified = (await verifyJsonLd(json, options)) === true;
  } catch (error) {
    result.verified = false;
    result.error = errorText(error);
  }
  return result;
}

async function checkProofs(cls, json, options) {
  const result = { present: asList(json.proof).length > 0, verified: null, keys: [], error: null };
  if (!result.present) return result;
  try {
    const object = await cls.fromJsonLd(json, options);
    for await (const proof of object.getProofs(options)) {
      const key = await verifyProof(json, proof, options);
      result.keys.push({
        keyId: proof.verificationMethodId?.href ?? null,
        cryptosuite: proof.cryptosuite ?? null,
        verified: key != null,
        controller: key?.controllerId?.href ?? null,
      });
    }
    // All proofs hold and every actor/attributedTo is a controller of one of their keys.
    result.verified = (await verifyObject(cls, json, options)) != null;
  } catch (error) {
    result.verified = false;
    result.error = errorText(error);
  }
  return result;
}

async function ownChecks(request, json) {
  const t0 = performance.now();
  const ctx = controlContext();
  const fetched = [];
  const options = {
    contextLoader: ctx.contextLoader,
    documentLoader: recordingLoader(await signedLoader(ctx), fetched),
  };
  const httpSignature = await checkHttpSignature(request, options);
  const ldSignature = await checkLdSignature(json, options);
  const proof = await checkProofs(Activity, detachSignature(json), options);
  const embedded = json.object;
  const objectProof =
    embedded != null && typeof embedded === "object" && !Array.isArray(embedded)
      ? { type: embedded.type ?? null, id: embedded.id ?? null, ...(await checkProofs(ASObject, embedded, options)) }
      : null;
  return {
    httpSignature,
    ldSignature,
    proof,
    objectProof,
    fetched,
    ms: Math.round(performance.now() - t0),
  };
}

function listener(handler) {
  return async (ctx, activity) => {
    await recordActivity(ctx, activity, { verified: true });
    if (handler) await handler(ctx, activity);
  };
}

async function onFollow(ctx, follow) {
  if (follow.objectId == null || follow.actorId == null) return;
  const parsed = ctx.parseUri(follow.objectId);
  if (parsed?.type !== "actor" || parsed.identifier !== USERNAME) return;
  if (state.followPolicy === "ignore") return;
  const follower = await follow.getActor(ctx);
  if (follower == null || follower.inboxId == null) return;
  const AnswerClass = state.followPolicy === "accept" ? Accept : Reject;
  const answer = new AnswerClass({
    id: newObjectUri(ctx, AnswerClass),
    actor: follow.objectId,
    object: follow,
    to: follower.id,
  });
  state.objects.set(answer.id.href, answer);
  if (state.followPolicy === "accept") {
    state.followers.set(follower.id.href, {
      id: follower.id.href,
      inbox: follower.inboxId.href,
      sharedInbox: follower.endpoints?.sharedInbox?.href ?? null,
      followId: follow.id?.href ?? null,
      acceptId: answer.id.href,
    });
  }
  await ctx.sendActivity({ identifier: USERNAME }, follower, answer);
}

function findFollowing(followId, actorId) {
  for (const f of state.following.values()) {
    if (followId != null && f.followId === followId) return f;
  }
  if (actorId != null) return state.following.get(actorId) ?? null;
  return null;
}

function onAcceptOrReject(status) {
  return async (ctx, activity) => {
    let object = null;
    try {
      object = await activity.getObject(ctx);
    } catch {
      /* ignore */
    }
    const f = findFollowing(activity.objectId?.href ?? null, activity.actorId?.href ?? null);
    if (f != null && (object == null || object instanceof Follow)) {
      f.status = status;
      f.answerId = activity.id?.href ?? null;
    }
  };
}

async function onUndo(ctx, undo) {
  const objectId = undo.objectId?.href ?? null;
  for (const [id, f] of state.followers) {
    if ((objectId != null && f.followId === objectId) || (id === undo.actorId?.href && objectId == null)) {
      state.followers.delete(id);
    }
  }
  // Undo{Follow} with an embedded Follow whose id we never saw: fall back to actor.
  try {
    const obj = await undo.getObject(ctx);
    if (obj instanceof Follow && obj.actorId != null) state.followers.delete(obj.actorId.href);
  } catch {
    /* ignore */
  }
}

federation
  .setInboxListeners("/users/{identifier}/inbox", "/inbox")
  .setSharedKeyDispatcher(() => ({ identifier: USERNAME }))
  .on(Follow, listener(onFollow))
  .on(Accept, listener(onAcceptOrReject("accepted")))
  .on(Reject, listener(onAcceptOrReject("rejected")))
  .on(Undo, listener(onUndo))
  .on(Create, listener())
  .on(Update, listener())
  .on(Delete, listener())
  .on(Announce, listener())
  .on(Like, listener())
  .on(Move, listener(onMove))
  .on(Activity, listener()) // any other activity type
  .onUnverifiedActivity(async (ctx, activity, reason) => {
    await recordActivity(ctx, activity, {
      verified: false,
      reason: {
        type: reason?.type ?? null,
        keyId: reason?.keyId?.href ?? null,
        status: reason?.result?.status ?? null,
      },
    });
    // returning nothing keeps Fedify's default 401
  })
  .onError((ctx, error) => {
    state.errors.push({
      seq: nextSeq(),
      time: new Date().toISOString(),
      where: "inbox",
      error: String(error?.stack ?? error),
    });
  });

// ---------------------------------------------------------------- helpers
class HttpError extends Error {
  constructor(status, message, extra = {}) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

function controlContext() {
  return federation.createContext(new URL(BASE), undefined);
}

async function signedLoader(ctx) {
  return await ctx.getDocumentLoader({ identifier: USERNAME });
}

/** Resolves "user@host:port", "@user@host", "acct:…" or an http(s) URL. */
async function resolveObject(ctx, target) {
  if (typeof target !== "string" || target.trim() === "") {
    throw new HttpError(400, "target must be a handle or URL");
  }
  let identifier = target.trim();
  if (!/^https?:\/\//.test(identifier)) {
    identifier = identifier.replace(/^acct:/, "").replace(/^@/, "");
    if (!/^[^@\s]+@[^@\s]+$/.test(identifier)) throw new HttpError(400, `bad handle: ${target}`);
    identifier = `acct:${identifier}`; // WebFinger via Fedify (https->http rewrite in capture.mjs)
  }
  const documentLoader = await signedLoader(ctx);
  let obj;
  try {
    obj = await ctx.lookupObject(identifier, { documentLoader });
  } catch (error) {
    throw new HttpError(502, `lookup of ${target} failed: ${error?.message ?? error}`);
  }
  if (obj == null) throw new HttpError(502, `lookup of ${target} returned nothing`);
  return obj;
}

async function resolveActor(ctx, target) {
  const obj = await resolveObject(ctx, target);
  if (!isActor(obj)) throw new HttpError(502, `${target} is not an actor`);
  if (obj.id == null || obj.inboxId == null) throw new HttpError(502, `${target} has no id/inbox`);
  return obj;
}

function followersAsRecipients() {
  return [...state.followers.values()].map((f) => ({
    id: new URL(f.id),
    inboxId: f.inbox ? new URL(f.inbox) : null,
    endpoints: f.sharedInbox ? { sharedInbox: new URL(f.sharedInbox) } : null,
  }));
}

/** Sends immediately (no queue) so delivery failures are reported back. */
async function deliver(ctx, recipients, activity, { sharedInbox = false } = {}) {
  if (recipients.length === 0) return { delivered: false, reason: "no recipients" };
  const before = outgoing.length;
  try {
    await ctx.sendActivity({ identifier: USERNAME }, recipients, activity, {
      immediate: true,
      preferSharedInbox: sharedInbox,
    });
  } catch (error) {
    throw new HttpError(502, `delivery failed: ${error?.message ?? error}`, {
      deliveryStatus: error instanceof SendActivityError ? error.statusCode : null,
      responseBody: error instanceof SendActivityError ? error.responseBody : null,
      activityId: activity.id?.href ?? null,
      requests: outgoingLog().slice(before),
    });
  }
  return {
    delivered: true,
    requests: outgoingLog().slice(before).filter((e) => e.method === "POST"),
  };
}

function addressing(visibility, extraActors, followersUri) {
  const ids = extraActors.map((a) => a.id);
  switch (visibility ?? "public") {
    case "public":
      return { tos: [PUBLIC_COLLECTION, ...ids], ccs: [followersUri] };
    case "unlisted":
      return { tos: [followersUri, ...ids], ccs: [PUBLIC_COLLECTION] };
    case "followers":
      return { tos: [followersUri, ...ids], ccs: [] };
    case "direct":
      return { tos: ids, ccs: [] };
    default:
      throw new HttpError(400, `bad visibility: ${visibility}`);
  }
}

async function mentionFor(ctx, actor) {
  const host = actor.id.host;
  const name = actor.preferredUsername ? `@${actor.preferredUsername}@${host}` : null;
  return new Mention({ href: actor.id, name });
}

async function createNote(ctx, body, { replyTo = null } = {}) {
  if (typeof body.content !== "string") throw new HttpError(400, "content (HTML string) required");
  const extra = [];
  for (const t of body.to ?? []) extra.push(await resolveActor(ctx, t));
  let inReplyTo = null;
  let replyAuthor = null;
  if (replyTo != null) {
    inReplyTo = new URL(replyTo);
    let parent = null;
    try {
      parent = await resolveObject(ctx, replyTo);
    } catch (error) {
      if (extra.length === 0) throw error;
    }
    if (parent?.attributionId != null) {
      replyAuthor = await resolveActor(ctx, parent.attributionId.href);
      if (!extra.some((a) => a.id.href === replyAuthor.id.href)) extra.unshift(replyAuthor);
    }
  }
  const followersUri = ctx.getFollowersUri(USERNAME);
  const visibility = body.visibility ?? "public";
  const { tos, ccs } = addressing(visibility, extra, followersUri);
  const noteId = newObjectUri(ctx, Note);
  const published = Temporal.Now.instant();
  const tags = [];
  for (const a of extra) tags.push(await mentionFor(ctx, a));
  const note = new Note({
    id: noteId,
    attribution: ctx.getActorUri(USERNAME),
    content: body.content,
    replyTarget: inReplyTo,
    published,
    url: noteId,
    tos,
    ccs,
    tags,
    ...(body.summary ? { summary: body.summary } : {}),
    ...(body.sensitive != null ? { sensitive: Boolean(body.sensitive) } : {}),
  });
  const create = new Create({
    id: ctx.getObjectUri(Create, { identifier: USERNAME, id: noteId.pathname.split("/").pop() }),
    actor: ctx.getActorUri(USERNAME),
    object: note,
    published,
    tos,
    ccs,
  });
  state.objects.set(note.id.href, note);
  state.objects.set(create.id.href, create);
  state.notes.push(note.id.href);
  state.outbox.push(create.id.href);
  const recipients = [...extra];
  if (visibility !== "direct" && body.toFollowers !== false) recipients.push(...followersAsRecipients());
  const result = await deliver(ctx, dedupeRecipients(recipients), create, { sharedInbox: body.sharedInbox });
  return { noteId: note.id.href, createId: create.id.href, to: tos.map(String), cc: ccs.map(String), ...result };
}

function dedupeRecipients(list) {
  const seen = new Set();
  return list.filter((r) => {
    const k = r.id?.href;
    if (k == null || seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

async function recipientsForNote(ctx, note) {
  const out = [...followersAsRecipients()];
  for (const t of [...(note.toIds ?? []), ...(note.ccIds ?? [])]) {
    const href = t.href;
    if (href === PUBLIC_COLLECTION.href || href === ctx.getFollowersUri(USERNAME).href) continue;
    try {
      out.push(await resolveActor(ctx, href));
    } catch {
      /* skip unresolvable */
    }
  }
  return dedupeRecipients(out);
}

function getOwnNote(noteId) {
  const note = state.objects.get(noteId);
  if (!(note instanceof Note)) throw new HttpError(404, `unknown note ${noteId}`);
  return note;
}

/** alice follows `target` (handle or URL): the control API and onMove both use it. */
async function followActor(ctx, targetRef, { sharedInbox = false } = {}) {
  const target = await resolveActor(ctx, targetRef);
  const follow = new Follow({
    id: newObjectUri(ctx, Follow),
    actor: ctx.getActorUri(USERNAME),
    object: target.id,
    to: target.id,
  });
  state.objects.set(follow.id.href, follow);
  state.following.set(target.id.href, {
    actor: target.id.href,
    inbox: target.inboxId.href,
    sharedInbox: target.endpoints?.sharedInbox?.href ?? null,
    followId: follow.id.href,
    status: "pending",
    answerId: null,
    follow,
  });
  const result = await deliver(ctx, [target], follow, { sharedInbox });
  return { followId: follow.id.href, targetActor: target.id.href, ...result };
}

/** alice undoes her Follow of `target` (the Follow embedded): control API and onMove. */
async function unfollowActor(ctx, targetRef, { sharedInbox = false } = {}) {
  const target = await resolveActor(ctx, targetRef);
  const f = state.following.get(target.id.href);
  if (f == null) throw new HttpError(409, `not following ${target.id.href}`);
  const undo = new Undo({
    id: newObjectUri(ctx, Undo),
    actor: ctx.getActorUri(USERNAME),
    object: f.follow,
    to: target.id,
  });
  state.objects.set(undo.id.href, undo);
  const result = await deliver(ctx, [target], undo, { sharedInbox });
  state.following.delete(target.id.href);
  return { undoId: undo.id.href, followId: f.followId, targetActor: target.id.href, ...result };
}

// ---------------------------------------------------------------- Move
// Fedify parses Move (and has verified its signature, and that the key belongs to its
// actor, before calling the listener) but leaves what a Move means to the application.
// This peer does as Mastodon does (app/lib/activitypub/activity/move.rb):
//   1. the actor must be the object: an account moves only itself;
//   2. the target is fetched fresh (resolveActor: a signed GET, which Fedify does not
//      cache) and must list the origin in its alsoKnownAs (Fedify: `aliasIds`);
//   3. then, after the Move has been answered (Mastodon queues a MoveWorker, whose
//      UnfollowFollowWorker follows the target, then unfollows the origin), each local
//      actor following the origin (here only alice) follows the target and sends the
//      origin an Undo{Follow}, through the same code as the control API.
// Every Move is recorded in state.moves as
//   {seq, moveId, origin, target, status, reason, followId, undoId}
// status: "refused" (reason says why), "ignored" (alice does not follow the origin),
// "moving" (re-follow under way), "moved", or "failed" (reason: the error).
async function onMove(ctx, move) {
  const origin = move.actorId?.href ?? null;
  const target = move.targetId?.href ?? null;
  const entry = {
    seq: nextSeq(),
    moveId: move.id?.href ?? null,
    origin,
    target,
    status: "refused",
    reason: null,
    followId: null,
    undoId: null,
  };
  state.moves.push(entry);
  if (origin == null || move.objectId?.href !== origin) {
    entry.reason = "the Move's actor is not its object";
    return;
  }
  if (target == null || target === origin) {
    entry.reason = "the Move has no target other than its object";
    return;
  }
  let targetActor;
  try {
    targetActor = await resolveActor(controlContext(), target);
  } catch (error) {
    entry.reason = `the target could not be fetched: ${error?.message ?? error}`;
    return;
  }
  if (targetActor.id.href !== target) {
    entry.reason = `the target's document has another id: ${targetActor.id.href}`;
    return;
  }
  if (!targetActor.aliasIds.some((alias) => alias.href === origin)) {
    entry.reason = "the target does not list the origin in its alsoKnownAs";
    return;
  }
  if (!state.following.has(origin)) {
    entry.status = "ignored";
    entry.reason = "no local actor follows the origin";
    return;
  }
  entry.status = "moving";
  void refollow(entry); // not awaited: the Move is answered first, as Mastodon does
}

async function refollow(entry) {
  const ctx = controlContext();
  try {
    entry.followId = (await followActor(ctx, entry.target)).followId;
    entry.undoId = (await unfollowActor(ctx, entry.origin)).undoId;
    entry.status = "moved";
  } catch (error) {
    entry.status = "failed";
    entry.reason = String(error?.message ?? error);
    state.errors.push({
      seq: nextSeq(),
      time: new Date().toISOString(),
      where: "move",
      activityId: entry.moveId,
      error: entry.reason,
    });
  }
}

// ---------------------------------------------------------------- control API
const control = {
  "GET /_control/health": async () => ({
    ok: true,
    baseUrl: BASE,
    actor: `${BASE}/users/${USERNAME}`,
    handle: `${USERNAME}@${new URL(BASE).host}`,
    inbox: `${BASE}/users/${USERNAME}/inbox`,
    sharedInbox: `${BASE}/inbox`,
    node: process.version,
    fedify: FEDIFY_VERSION,
    startupMs: STARTUP_MS,
  }),

  // ?since=N returns only entries with seq > N (one sequence across all lists).
  "GET /_control/inbox": async (_body, query) => {
    const since = Number(query.get("since") ?? 0) || 0;
    const after = (list) => (since > 0 ? list.filter((e) => e.seq > since) : list);
    return {
      seq: currentSeq(),
      activities: after(state.activities),
      outgoing: after(outgoingLog()),
      incoming: after(state.incoming),
      errors: after(state.errors),
    };
  },

  "GET /_control/state": async () => ({
    followPolicy: state.followPolicy,
    followers: [...state.followers.values()],
    following: [...state.following.values()].map(({ follow, ...rest }) => rest),
    notes: state.notes,
    moves: state.moves,
  }),

  "GET /_control/logs": async () => ({ logs: LOG_RING }),

  "POST /_control/reset": async () => {
    state.activities.length = 0;
    state.incoming.length = 0;
    state.errors.length = 0;
    state.moves.length = 0;
    outgoing.length = 0;
    LOG_RING.length = 0;
    return { ok: true };
  },

  "POST /_control/config": async (body) => {
    if (body.followPolicy != null) {
      if (!["accept", "reject", "ignore"].includes(body.followPolicy)) {
        throw new HttpError(400, "followPolicy must be accept|reject|ignore");
      }
      state.followPolicy = body.followPolicy;
    }
    return { followPolicy: state.followPolicy };
  },

  "POST /_control/lookup": async (body) => {
    const ctx = controlContext();
    const obj = await resolveObject(ctx, body.target);
    const info = {
      type: typeName(obj, null),
      id: obj.id?.href ?? null,
      json: await obj.toJsonLd({ contextLoader: ctx.contextLoader }),
    };
    if (isActor(obj)) {
      info.inbox = obj.inboxId?.href ?? null;
      info.sharedInbox = obj.endpoints?.sharedInbox?.href ?? null;
      info.preferredUsername = obj.preferredUsername?.toString() ?? null;
      info.publicKeys = [];
      for await (const k of obj.getPublicKeys({ documentLoader: await signedLoader(ctx) })) {
        info.publicKeys.push({ id: k.id?.href ?? null, owner: k.ownerId?.href ?? null });
      }
      info.assertionMethods = obj.assertionMethodIds?.map((u) => u.href) ?? [];
    }
    return info;
  },

  "POST /_control/follow": async (body) =>
    followActor(controlContext(), body.target, { sharedInbox: body.sharedInbox }),

  "POST /_control/unfollow": async (body) =>
    unfollowActor(controlContext(), body.target, { sharedInbox: body.sharedInbox }),

  "POST /_control/post": async (body) => createNote(controlContext(), body),

  "POST /_control/reply": async (body) => {
    if (typeof body.inReplyTo !== "string") throw new HttpError(400, "inReplyTo required");
    return createNote(controlContext(), body, { replyTo: body.inReplyTo });
  },

  "POST /_control/update": async (body) => {
    const ctx = controlContext();
    const old = getOwnNote(body.noteId);
    if (typeof body.content !== "string") throw new HttpError(400, "content required");
    const note = old.clone({ content: body.content, updated: Temporal.Now.instant() });
    state.objects.set(note.id.href, note);
    const update = new Update({
      id: newObjectUri(ctx, Update),
      actor: ctx.getActorUri(USERNAME),
      object: note,
      tos: note.toIds,
      ccs: note.ccIds,
    });
    state.objects.set(update.id.href, update);
    const result = await deliver(ctx, await recipientsForNote(ctx, note), update);
    return { updateId: update.id.href, noteId: note.id.href, ...result };
  },

  "POST /_control/delete": async (body) => {
    const ctx = controlContext();
    const note = getOwnNote(body.noteId);
    const recipients = await recipientsForNote(ctx, note);
    const del = new Delete({
      id: newObjectUri(ctx, Delete),
      actor: ctx.getActorUri(USERNAME),
      object: new Tombstone({ id: note.id }),
      tos: note.toIds,
      ccs: note.ccIds,
    });
    state.objects.delete(note.id.href);
    state.objects.set(del.id.href, del);
    const result = await deliver(ctx, recipients, del);
    return { deleteId: del.id.href, noteId: note.id.href, ...result };
  },

  "POST /_control/like": async (body) => {
    const ctx = controlContext();
    const obj = await resolveObject(ctx, body.object);
    if (obj.attributionId == null) throw new HttpError(502, "object has no attributedTo");
    const author = await resolveActor(ctx, obj.attributionId.href);
    const like = new Like({
      id: newObjectUri(ctx, Like),
      actor: ctx.getActorUri(USERNAME),
      object: obj.id,
      to: author.id,
    });
    state.objects.set(like.id.href, like);
    const result = await deliver(ctx, [author], like);
    return { likeId: like.id.href, ...result };
  },

  "POST /_control/announce": async (body) => {
    const ctx = controlContext();
    const obj = await resolveObject(ctx, body.object);
    const recipients = followersAsRecipients();
    if (obj.attributionId != null) recipients.push(await resolveActor(ctx, obj.attributionId.href));
    const announce = new Announce({
      id: newObjectUri(ctx, Announce),
      actor: ctx.getActorUri(USERNAME),
      object: obj.id,
      tos: [PUBLIC_COLLECTION],
      ccs: [ctx.getFollowersUri(USERNAME), ...(obj.attributionId ? [obj.attributionId] : [])],
      published: Temporal.Now.instant(),
    });
    state.objects.set(announce.id.href, announce);
    const result = await deliver(ctx, dedupeRecipients(recipients), announce);
    return { announceId: announce.id.href, ...result };
  },

  // Raw delivery: exact bytes, explicit signature scheme, no double-knock.
  "POST /_control/send": async (body) => {
    const ctx = controlContext();
    if (typeof body.inbox !== "string") throw new HttpError(400, "inbox URL required");
    if (body.activity == null || typeof body.activity !== "object") {
      throw new HttpError(400, "activity object required");
    }
    const scheme = body.scheme ?? "rfc9421";
    if (!["rfc9421", "draft-cavage", "none"].includes(scheme)) {
      throw new HttpError(400, "scheme must be rfc9421|draft-cavage|none");
    }
    const activity = {
      "@context": "https://www.w3.org/ns/activitystreams",
      id: `${BASE}/users/${USERNAME}/raw/${crypto.randomUUID()}`,
      actor: ctx.getActorUri(USERNAME).href,
      ...body.activity,
    };
    const payload = new TextEncoder().encode(JSON.stringify(activity));
    let request = new Request(body.inbox, {
      method: "POST",
      headers: {
        "Content-Type": "application/activity+json",
        Accept: "application/activity+json, application/ld+json",
        ...(body.headers ?? {}),
      },
      body: payload,
    });
    if (scheme !== "none") {
      const keys = await ctx.getActorKeyPairs(USERNAME);
      const rsa = keys.find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5");
      request = await signRequest(request, rsa.privateKey, rsa.keyId, {
        spec: scheme === "draft-cavage" ? "draft-cavage-http-signatures-12" : "rfc9421",
        body: payload.buffer,
      });
    }
    const response = await fetch(request);
    return {
      activityId: activity.id,
      status: response.status,
      responseBody: (await response.text()).slice(0, 2000),
      scheme,
    };
  },
};

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

function sendJson(res, status, obj) {
  const data = JSON.stringify(obj, null, 1);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8" });
  res.end(data);
}

async function handleControl(req, res, path, query) {
  const key = `${req.method} ${path}`;
  const fn = control[key];
  if (fn == null) return sendJson(res, 404, { error: `no control endpoint ${key}` });
  let body = {};
  if (req.method === "POST") {
    const raw = await readBody(req);
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        return sendJson(res, 400, { error: "invalid JSON body" });
      }
    }
  }
  try {
    sendJson(res, 200, await fn(body, query));
  } catch (error) {
    if (error instanceof HttpError) {
      sendJson(res, error.status, { error: error.message, ...error.extra });
    } else {
      process.stderr.write(`control ${key} failed: ${error?.stack ?? error}\n`);
      sendJson(res, 500, { error: String(error?.message ?? error) });
    }
  }
}

async function handleNodeRequest(req, res) {
  const host = req.headers.host ?? new URL(BASE).host;
  const url = new URL(req.url, `http://${host}`);
  if (url.pathname.startsWith("/_control/")) return handleControl(req, res, url.pathname, url.searchParams);

  const body = req.method === "GET" || req.method === "HEAD" ? null : await readBody(req);
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const request = new Request(url, {
    method: req.method,
    headers,
    body: body && body.length > 0 ? body : null,
  });
  const sig = signatureInfo(headers);
  let bodyJson = null;
  if (body && body.length > 0) {
    try {
      bodyJson = JSON.parse(body.toString("utf8"));
    } catch {
      /* not JSON */
    }
  }
  const entry = {
    seq: nextSeq(),
    time: new Date().toISOString(),
    method: req.method,
    path: url.pathname + url.search,
    host,
    accept: headers.get("accept"),
    contentType: headers.get("content-type"),
    userAgent: headers.get("user-agent"),
    scheme: sig.scheme,
    keyId: sig.keyId,
    signedComponents: sig.components,
    signatureParams: sig.params,
    activityType: bodyJson?.type ?? null,
    activityId: bodyJson?.id ?? null,
    status: null,
    responseBody: null,
  };
  const inboxPost =
    req.method === "POST" && INBOX_PATH.test(url.pathname) &&
    bodyJson != null && typeof bodyJson === "object" && !Array.isArray(bodyJson);
  if (inboxPost) {
    entry.raw = bodyJson; // the exact JSON body, as received
    entry.fedify = null; // what Fedify reported it verified (see wrapSpan)
    entry.checks = null; // the peer's own checks (see ownChecks)
  }
  state.incoming.push(entry);
  const store = {
    path: url.pathname,
    signature: sig,
    bodyJson,
    received: null,
    requestSeq: entry.seq,
    checks: null,
  };
  if (inboxPost) {
    // The peer's own checks run first, so that an activity shows up in activities[] (with
    // its checks) only once everything about it is known, just before the answer is sent.
    try {
      entry.checks = await ownChecks(new Request(url, { method: req.method, headers, body }), bodyJson);
    } catch (error) {
      entry.checks = { error: errorText(error) };
    }
    store.checks = entry.checks;
  }
  const response = await als.run(store, () =>
    federation.fetch(request, {
      contextData: undefined,
      onNotFound: () => new Response("Not found", { status: 404, headers: { "content-type": "text/plain" } }),
      onNotAcceptable: () =>
        new Response("Not acceptable", { status: 406, headers: { "content-type": "text/plain" } }),
    })
  );
  entry.status = response.status;
  if (inboxPost) {
    const received = store.received;
    // Fedify's span event, as emitted: before its check that the HTTP signature's key
    // belongs to the actor, so a 401 with httpSignatureVerified true means they differ.
    entry.fedify = received == null ? null : {
      activityVerified: Boolean(received["activitypub.activity.verified"]),
      verification: received["activitypub.activity.verified"] ? verificationMethod(received) : null,
      ldSignatureVerified: Boolean(received["ld_signatures.verified"]),
      httpSignatureVerified: Boolean(received["http_signatures.verified"]),
      httpSignatureKeyId: received["http_signatures.key_id"] || null,
      httpSignatureFailureReason: received["http_signatures.failure_reason"] ?? null,
    };
  }
  const out = Buffer.from(await response.arrayBuffer());
  if (response.status >= 400) entry.responseBody = out.toString("utf8").slice(0, 1000);
  const outHeaders = {};
  response.headers.forEach((v, k) => {
    outHeaders[k] = k in outHeaders ? `${outHeaders[k]}, ${v}` : v;
  });
  res.writeHead(response.status, outHeaders);
  res.end(req.method === "HEAD" ? undefined : out);
}

// ---------------------------------------------------------------- go
const STARTUP_MS = Math.round(performance.now() - T0);

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}

// With --exit-with-stdin the peer exits when its stdin reaches EOF, so a
// test harness that dies without cleaning up does not leave it running
// (start it with stdin=PIPE and just never write to it).
if (OPTS.exitWithStdin) {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}

process.stdout.write(`READY ${BASE}\n`);
