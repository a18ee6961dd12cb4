// Standalone self-test: starts two peers (A and B) and drives them through
// the control API.  Exits non-zero on the first failure.
//   node selftest.mjs            (run from this directory or anywhere)

import { spawn } from "node:child_process";
import http from "node:http";
import { fileURLToPath } from "node:url";
import path from "node:path";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const children = [];
const peers = [];
let failures = 0;

function log(msg) {
  process.stdout.write(`${msg}\n`);
}
function check(cond, msg, detail) {
  if (cond) log(`  ok   ${msg}`);
  else {
    failures++;
    log(`  FAIL ${msg}`);
    if (detail !== undefined) log(`       ${JSON.stringify(detail, null, 1).slice(0, 3000)}`);
  }
  return cond;
}
function must(cond, msg, detail) {
  if (!check(cond, msg, detail)) throw new Error(`aborting: ${msg}`);
}

function startPeer(name) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ["server.mjs", "--port", "0"], {
      cwd: HERE,
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`${name}: no READY within 20 s\n${err}`)), 20000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^READY (http:\/\/127\.0\.0\.1:(\d+))$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ name, base: m[1], port: Number(m[2]), child, ms: Math.round(performance.now() - t0), stderr: () => err });
      }
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited early (${code})\n${err}`));
    });
  });
}

async function api(peer, method, p, body) {
  const res = await fetch(`${peer.base}${p}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  return { status: res.status, json };
}

async function waitFor(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function activities(peer) {
  return (await api(peer, "GET", "/_control/inbox")).json;
}

// A minimal fake server: one actor whose inbox answers 401 to RFC 9421
// signatures (Signature-Input present) and 202 to draft-cavage ones.
let stubBase = "stub-not-started";
function startCavageOnlyStub() {
  return new Promise((resolve) => {
    const server = http.createServer(async (req, res) => {
      for await (const _ of req) { /* drain */ }
      const base = `http://127.0.0.1:${server.address().port}`;
      if (req.method === "GET" && req.url === "/actor") {
        res.writeHead(200, { "content-type": "application/activity+json" });
        res.end(JSON.stringify({
          "@context": "https://www.w3.org/ns/activitystreams",
          id: `${base}/actor`, type: "Person", preferredUsername: "stub",
          inbox: `${base}/inbox`, outbox: `${base}/outbox`,
        }));
      } else if (req.method === "POST" && req.url === "/inbox") {
        const rfc = req.headers["signature-input"] != null;
        res.writeHead(rfc ? 401 : 202, { "content-type": "text/plain" });
        res.end(rfc ? "rfc9421 not supported here" : "");
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    server.listen(0, "127.0.0.1", () => {
      stubBase = `http://127.0.0.1:${server.address().port}`;
      resolve({ server, actor: `${stubBase}/actor`, inbox: `${stubBase}/inbox` });
    });
  });
}

async function main() {
  log("starting peers A and B");
  const [A, B] = await Promise.all([startPeer("A"), startPeer("B")]);
  peers.push(A, B);
  log(`  A ${A.base} ready in ${A.ms} ms; B ${B.base} ready in ${B.ms} ms`);
  const aActor = `${A.base}/users/alice`;
  const bActor = `${B.base}/users/alice`;

  must((await api(A, "GET", "/_control/health")).status === 200, "A health 200");

  // ---- follow by handle (WebFinger over http) -----------------------------
  log("A follows alice@127.0.0.1:PORT_B");
  const f = await api(A, "POST", "/_control/follow", { target: `alice@127.0.0.1:${B.port}` });
  must(f.status === 200, "follow returns 200", f);
  check(f.json.targetActor === bActor, "targetActor resolved via WebFinger", f.json);
  check(f.json.followId?.startsWith(`${aActor}/follow/`), "followId is under A's actor", f.json);

  const accept = await waitFor(async () =>
    (await activities(A)).activities.find((a) => a.type === "Accept"), "Accept at A");
  check(accept.verified === true, "A verified B's Accept", accept);
  check(accept.actor === bActor, "Accept actor is B", accept);
  check(accept.object === f.json.followId, "Accept object is the Follow id", accept);
  check(typeof accept.raw?.object === "object" && accept.raw.object.id === f.json.followId,
    "Accept embeds the whole Follow object", accept.raw);
  log(`       (Accept verified via ${accept.verification})`);

  const bAct = await activities(B);
  const follow = bAct.activities.find((a) => a.type === "Follow");
  check(follow?.verified === true && follow.id === f.json.followId, "B received verified Follow", follow);
  check(follow?.httpSignatureScheme === "rfc9421", "Follow carried an RFC 9421 signature", follow);

  // The listener records the activity before processing it, so poll.
  const aState = await waitFor(async () => {
    const s = (await api(A, "GET", "/_control/state")).json;
    return s.following.some((x) => x.actor === bActor && x.status === "accepted") ? s : null;
  }, "A's following entry to become accepted", 5000).catch(async () => null);
  check(aState != null, "A follows B (accepted)", aState ?? (await api(A, "GET", "/_control/state")).json);
  const bState = (await api(B, "GET", "/_control/state")).json;
  check(bState.followers.some((x) => x.id === aActor), "B lists A as follower", bState);

  // ---- outgoing log: first knock RFC 9421, no retry ------------------------
  const aOut = (await activities(A)).outgoing;
  const followPost = aOut.filter((e) => e.method === "POST" && e.activityId === f.json.followId);
  check(followPost.length === 1 && followPost[0].scheme === "rfc9421" && followPost[0].status === 202 &&
    followPost[0].attempt === 1, "A's Follow POST: one attempt, rfc9421, 202", followPost);
  check(followPost[0]?.hasLdSignature === true && followPost[0]?.hasProof === true,
    "Fedify's POST body carries LD signature + integrity proof", followPost);
  const wf = aOut.find((e) => e.url.includes("/.well-known/webfinger"));
  check(wf?.rewrittenFrom?.startsWith("https://") && wf.status === 200, "WebFinger https->http rewrite", wf);
  const signedGet = aOut.find((e) => e.method === "GET" && e.url === bActor);
  check(signedGet?.scheme === "rfc9421" && signedGet.status === 200, "A's GET of B's actor is RFC 9421-signed", signedGet);
  const bOut = (await activities(B)).outgoing;
  const acceptPost = bOut.find((e) => e.method === "POST" && e.activityType === "Accept");
  check(acceptPost?.status === 202 && acceptPost.attempt === 1 && acceptPost.scheme === "rfc9421",
    "B's Accept POST: one attempt, rfc9421, 202", acceptPost);
  const aIn = (await activities(A)).incoming;
  check(aIn.some((e) => e.method === "GET" && e.path === "/users/alice" && e.scheme === "rfc9421"),
    "B's fetch of A's actor was signed (seen in A's incoming log)", aIn);

  // ---- B posts, A receives; A replies ---------------------------------------
  log("B posts to followers; A replies");
  const post = await api(B, "POST", "/_control/post", { content: "<p>hello from B</p>" });
  must(post.status === 200 && post.json.delivered, "B's post delivered", post);
  const created = await waitFor(async () =>
    (await activities(A)).activities.find((a) => a.type === "Create" && a.id === post.json.createId),
    "Create at A");
  check(created.verified === true && created.raw?.object?.id === post.json.noteId, "A received B's verified Create", created);

  const reply = await api(A, "POST", "/_control/reply", {
    inReplyTo: post.json.noteId,
    content: "<p>reply from A</p>",
  });
  must(reply.status === 200 && reply.json.noteId && reply.json.createId, "reply returns noteId/createId", reply);
  const gotReply = await waitFor(async () =>
    (await activities(B)).activities.find((a) => a.type === "Create" && a.id === reply.json.createId),
    "reply at B");
  check(gotReply.verified === true, "B verified A's reply", gotReply);
  check(gotReply.raw?.object?.inReplyTo === post.json.noteId, "reply has inReplyTo = B's note", gotReply.raw);
  const noteFetch = await fetch(reply.json.noteId, { headers: { accept: "application/activity+json" } });
  check(noteFetch.status === 200 && (await noteFetch.json()).id === reply.json.noteId, "reply note is dereferenceable");

  // ---- raw sends: verification path detection ------------------------------
  log("raw sends from A to B's inbox (HTTP signature only, no LD signature)");
  for (const scheme of ["rfc9421", "draft-cavage"]) {
    const r = await api(A, "POST", "/_control/send", {
      inbox: `${B.base}/users/alice/inbox`,
      scheme,
      activity: { type: "Like", object: post.json.noteId },
    });
    check(r.json.status === 202, `raw ${scheme} Like accepted (202)`, r.json);
    const rec = (await activities(B)).activities.find((a) => a.id === r.json.activityId);
    check(rec?.verified === true && rec.verification === "http-signature" && rec.httpSignatureScheme === scheme,
      `B verified it via http-signature/${scheme}`, rec);
  }
  const unsigned = await api(A, "POST", "/_control/send", {
    inbox: `${B.base}/inbox`,
    scheme: "none",
    activity: { type: "Like", object: post.json.noteId },
  });
  check(unsigned.json.status === 401, "unsigned raw Like rejected (401)", unsigned.json);
  const unrec = (await activities(B)).activities.find((a) => a.id === unsigned.json.activityId);
  check(unrec?.verified === false && unrec.unverifiedReason?.type === "noSignature",
    "B recorded it as unverified (noSignature)", unrec);

  // ---- unfollow ---------------------------------------------------------------
  log("A unfollows B");
  const u = await api(A, "POST", "/_control/unfollow", { target: bActor });
  must(u.status === 200 && u.json.delivered, "unfollow delivered", u);
  const undo = await waitFor(async () =>
    (await activities(B)).activities.find((a) => a.type === "Undo" && a.id === u.json.undoId), "Undo at B");
  check(undo.verified === true && undo.object === f.json.followId, "B verified Undo(Follow)", undo);
  const bState2 = (await api(B, "GET", "/_control/state")).json;
  check(!bState2.followers.some((x) => x.id === aActor), "B no longer lists A as follower", bState2);

  // ---- double-knock capture against a stub that only accepts draft-cavage ------
  log("double-knock capture: stub inbox rejects RFC 9421 with 401");
  const stub = await startCavageOnlyStub();
  const sf = await api(A, "POST", "/_control/follow", { target: stub.actor });
  check(sf.status === 200 && sf.json.delivered, "follow to cavage-only stub delivered", sf);
  const knocks = (await activities(A)).outgoing.filter((e) => e.method === "POST" && e.url === stub.inbox);
  check(knocks.length === 2 &&
    knocks[0].scheme === "rfc9421" && knocks[0].status === 401 && knocks[0].attempt === 1 &&
    knocks[1].scheme === "draft-cavage" && knocks[1].status === 202 && knocks[1].attempt === 2,
    "outgoing log shows rfc9421→401 then draft-cavage→202", knocks);
  const su = await api(A, "POST", "/_control/unfollow", { target: stub.actor });
  const undoKnock = (await activities(A)).outgoing.filter((e) => e.method === "POST" && e.activityId === su.json.undoId);
  check(undoKnock.length === 1 && undoKnock[0].scheme === "draft-cavage" && undoKnock[0].status === 202,
    "Fedify remembered draft-cavage for that origin", undoKnock);
  stub.server.close();

  // ---- no retries with another scheme between the two Fedify peers ------------
  for (const [peer, name] of [[A, "A"], [B, "B"]]) {
    const out = (await activities(peer)).outgoing;
    const retried = out.filter((e) => e.attempt > 1 && e.method === "POST" && !e.url.startsWith(stubBase));
    check(retried.length === 0, `${name}: no POST needed a second attempt`, retried);
    const errs = (await activities(peer)).errors;
    check(errs.length === 0, `${name}: no inbox/outbox errors`, errs);
  }
}

let exitCode = 0;
try {
  await main();
} catch (error) {
  failures++;
  log(`ERROR ${error?.stack ?? error}`);
}
if (failures > 0 || process.argv.includes("--verbose")) {
  exitCode = failures > 0 ? 1 : 0;
  for (const p of peers) log(`\n--- ${p.name} stderr (tail) ---\n${p.stderr().slice(-4000)}`);
}
log(failures > 0 ? `\n${failures} check(s) failed` : "\nselftest passed");
for (const c of children) c.kill("SIGTERM");
process.exit(exitCode);
