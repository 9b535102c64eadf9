// Scenario 6 (docs/benchmarks.md): the npm package as it ships (npm/dist) — its gzipped size, and
// how many events per second it decodes, folds and hands to the app's callback in headless
// Chromium.
//
//   node bench/sdk/throughput.mjs [--runs 10] [--events 10000] [--rounds 5]
//
// Each round has three passes; every one checks that each run's events arrive exactly once and in
// order (or the round fails):
// - "SDK alone": the client talks to an in-memory socket in the page (bench/sdk/lib.mjs, the
//   global `WebSocket` replaced), which answers `auth` and `subscribe` as the relay does and then
//   hands it the event frames of `--runs` runs, `--events` each, interleaved, as fast as the
//   client takes them.
//   No network, no relay: this is the SDK's own cost. Measured with `onEvent` only, with
//   `onEvent` plus `onState` (the folded state built as a JS object after every event), and with
//   `onState` at most once per frame (`stateEvery: "frame"`; each run's last state still has to
//   arrive, before `onEnd`).
// - "through a relay": the same events published to a relay started here (`target/release/runwire
//   serve` on 127.0.0.1:0), then one client subscribes to every run from seq 0 over WebSocket and
//   receives the relay's replay (the client asks for batched frames, several per message); and,
//   as the baseline, a bare `WebSocket` in the same page, batched the same way, that only
//   `JSON.parse`s each frame.
// Rates are events ÷ time from the first event to the last.

import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";
import { ROOT, RUNWIRE, spawnRunwire } from "../../tests/e2e/lib.mjs";
import { MemorySocket, eventAt, fmt, follow, inMemory, median, option } from "./lib.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const DIST = join(ROOT, "npm/dist");

const args = process.argv.slice(2);
const RUNS = option(args, "runs", 10);
const EVENTS = option(args, "events", 10_000);
const ROUNDS = option(args, "rounds", 5);
if (EVENTS < 2 || EVENTS > 10_000) throw new Error("--events: 2 to 10000 (the relay retains 10,000 events per run)");

for (const [path, hint] of [
  [join(DIST, "wasm/runwire_sdk_bg.wasm"), "build the package: npm/build.sh"],
  [RUNWIRE, "cargo build --release -p runwire-relay"],
  [CHROMIUM, "apt-get install chromium"],
]) {
  if (!existsSync(path)) throw new Error(`${path} is missing (${hint})`);
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
function token(secret, claims) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ ...claims, iat: now, exp: now + 3600 })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

function startRelay(secret, webDir) {
  const args = ["serve", "--addr", "127.0.0.1:0", "--secret", secret, "--web-dir", webDir];
  return spawnRunwire(args, { ...process.env, RUST_LOG: "warn" });
}

async function publish(url, secret, run) {
  const auth = `Bearer ${token(secret, { run, scope: "publish" })}`;
  for (let from = 1; from <= EVENTS; from += 1000) {
    const batch = [];
    for (let i = from; i < Math.min(from + 1000, EVENTS + 1); i++) batch.push(eventAt(i, EVENTS));
    const res = await fetch(`${url}/v1/runs/${run}/events`, {
      method: "POST",
      headers: { authorization: auth, "content-type": "application/json" },
      body: JSON.stringify(batch),
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) throw new Error(`publish to ${run}: ${res.status} ${await res.text()}`);
  }
}

// Runs in the page.
const PAGE = `<!doctype html><meta charset="utf-8"><title>runwire SDK throughput</title>
<script type="module">
import { RunwireClient } from "./dist/src/index.js";
// The in-memory pass and what it needs (lib.mjs), as source.
${[eventAt, MemorySocket, follow, inMemory].map(String).join("\n\n")}

window.inMemory = (args) => inMemory(RunwireClient, args);

window.viaRelay = ({ url, token, runs }) =>
  follow(new RunwireClient({ url, token, transport: "websocket" }), runs, false);

// The browser alone: a bare WebSocket that parses each frame and does nothing else.
window.bareSocket = ({ url, token, runs, events }) => new Promise((done, fail) => {
  const ws = new WebSocket(url);
  const want = runs.length * events, last = new Map();
  let count = 0, first = 0, outOfOrder = 0;
  const timer = setTimeout(() => { ws.close(); fail(new Error("timed out after " + count + " events")); }, 120000);
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "auth", token, batch: true }));
    for (const run of runs) ws.send(JSON.stringify({ type: "subscribe", run, since: 0 }));
  };
  ws.onmessage = (m) => {
    for (const line of m.data.split("\\n")) {
      const f = JSON.parse(line);
      if (f.type !== "event") continue;
      if (count++ === 0) first = performance.now();
      if (f.seq !== (last.get(f.run) ?? 0) + 1) outOfOrder++;
      last.set(f.run, f.seq);
      if (count === want) {
        clearTimeout(timer);
        ws.close();
        done({ count, ms: performance.now() - first, outOfOrder, states: 0, stale: 0, errors: [] });
      }
    }
  };
});
window.ready = true;
</script>`;

const wasm = join(DIST, "wasm/runwire_sdk_bg.wasm");
const glue = join(DIST, "wasm/runwire_sdk.js");
// Measured as the CI budget measures it (scripts/test-sdk.sh): `gzip -9`.
const gz = (file) => execFileSync("gzip", ["-9c", file]).length;
const raw = (file) => readFileSync(file).length;

const webDir = mkdtempSync(join(tmpdir(), "runwire-sdk-bench-"));
const profile = mkdtempSync(join(tmpdir(), "runwire-chromium-"));
cpSync(DIST, join(webDir, "dist"), { recursive: true });
writeFileSync(join(webDir, "index.html"), PAGE);
const secret = randomBytes(32).toString("hex");
const relay = await startRelay(secret, webDir);
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const PASSES = [
  ["SDK alone, onEvent", "inMemory", { withState: false }],
  ["SDK alone, onEvent + onState", "inMemory", { withState: "event" }],
  ["SDK alone, onEvent + onState once per frame", "inMemory", { withState: "frame" }],
  ["through a relay (WebSocket), onEvent", "viaRelay", {}],
  ["bare WebSocket + JSON.parse per frame, no SDK (baseline)", "bareSocket", {}],
];
const rates = new Map(PASSES.map(([name]) => [name, []]));
let failed = 0;
let userAgent = "";
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(`${relay.url}/`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
  userAgent = await page.evaluate(() => navigator.userAgent);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, fn, extra] of PASSES) {
      const runs = Array.from({ length: RUNS }, (_, i) => `sdk-${round}-${fn}-${i}`);
      if (fn !== "inMemory") for (const run of runs) await publish(relay.url, secret, run);
      const args = {
        url: relay.url.replace(/^http/, "ws") + "/v1/ws",
        token: token(secret, { runs, scope: "subscribe" }),
        runs,
        events: EVENTS,
        ...extra,
      };
      const r = await page.evaluate(([fn, a]) => window[fn](a), [fn, args]);
      const want = RUNS * EVENTS;
      const ok = r.count === want && r.outOfOrder === 0 && r.errors.length === 0 && r.stale === 0 &&
        (extra.withState !== "event" || r.states >= want);
      const rate = (r.count / r.ms) * 1000;
      console.error(
        `round ${round}, ${name}: ${fmt(r.count)} events in ${r.ms.toFixed(1)} ms = ${fmt(rate)}/s` +
          (ok ? "" : ` FAILED (want ${want}, out of order ${r.outOfOrder}, states ${r.states}, stale last states ${r.stale}, errors ${r.errors.slice(0, 3)})`),
      );
      if (ok) rates.get(name).push(rate);
      else failed++;
    }
  }
} finally {
  await context.close();
  await relay.stop();
  rmSync(profile, { recursive: true, force: true });
  rmSync(webDir, { recursive: true, force: true });
}

const chromiumVersion = /Chrome\/(\S+)/.exec(userAgent)?.[1] ?? "?";
console.log(`Scenario 6: the npm package (npm/dist) in headless Chromium ${chromiumVersion}; ${RUNS} runs × ${fmt(EVENTS)} events per pass`);
console.log("");
console.log("| metric | value |");
console.log("| --- | ---: |");
console.log(`| \`.wasm\`, gzipped | ${fmt(gz(wasm))} B (${fmt(raw(wasm))} B raw) |`);
console.log(`| JS glue, gzipped | ${fmt(gz(glue))} B (${fmt(raw(glue))} B raw) |`);
console.log(`| **total, gzipped** | **${fmt(gz(wasm) + gz(glue))} B** |`);
for (const [name, xs] of rates) {
  if (xs.length) console.log(`| events/s, ${name} | ${fmt(median(xs))} (median of ${xs.length}; ${fmt(Math.min(...xs))} to ${fmt(Math.max(...xs))}) |`);
}
console.log("");
console.log(`${ROUNDS * PASSES.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
