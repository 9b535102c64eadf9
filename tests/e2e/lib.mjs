// Shared by the browser and Node tests and bench/sdk: a relay of our own on 127.0.0.1:0, headless
// Chromium (playwright-core is loaded only by `launchBrowser`, so the Node tests need not install
// it), a polling wait, and the checks of a page that shows a run.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { before, after } from "node:test";
import assert from "node:assert/strict";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ARTIFACTS = join(ROOT, "artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** The relay binary the tests start: `RUNWIRE_BIN`, else the release build. */
export const RUNWIRE = process.env.RUNWIRE_BIN ?? join(ROOT, "target/release/runwire");

/**
 * Runs `command args` (in `cwd`, with `env`) and resolves once a line of its output matches
 * `pattern`, whose first group is the server's URL: `{ url, output(), stop() }`. `stop()` ends it
 * and what it forked (SIGTERM, then SIGKILL after 5 s).
 */
export async function startServer(command, args, { cwd, env = process.env, pattern, patience = 60_000 }) {
  const child = spawn(command, args, {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env,
    detached: true, // its own process group: stop() ends the workers it forks too
  });
  let output = "";
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${command} did not start within ${patience / 1000} s\n${output}`)), patience);
    child.once("exit", (code) => fail(new Error(`${command} exited with ${code}\n${output}`)));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on("line", (line) => {
        output = (output + line + "\n").slice(-8000);
        const m = pattern.exec(line);
        if (m) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
    }
  });
  return {
    url,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((ok) => child.once("exit", ok));
      process.kill(-child.pid, "SIGTERM");
      const timer = setTimeout(() => process.kill(-child.pid, "SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Starts the relay, `runwire …args` (its `--addr 127.0.0.1:0` among them), with `env`. */
export function spawnRunwire(args, env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" }) {
  if (!existsSync(RUNWIRE)) throw new Error(`${RUNWIRE} is missing: build it with cargo build --release -p runwire-relay`);
  return startServer(RUNWIRE, args, { env, pattern: /^listening on (http:\/\/\S+)/, patience: 20_000 });
}

/** Starts `runwire demo --addr 127.0.0.1:0 …args`; resolves once it prints its address. */
export function startRelay(args = []) {
  return spawnRunwire(["demo", "--addr", "127.0.0.1:0", ...args]);
}

/**
 * Registers `before`/`after` hooks in the current suite that start a relay (`startRelay(args)`)
 * and a browser, and stop them; the returned object holds them as `relay` and `browser`.
 */
export function relayAndBrowser(args = []) {
  const held = {};
  before(async () => {
    held.relay = await startRelay(args);
    held.browser = await launchBrowser();
  });
  after(async () => {
    await held.browser?.close();
    await held.relay?.stop();
  });
  return held;
}

/** Starts a simulated run on the demo relay; resolves to its id. */
export async function startRun(relay) {
  const res = await fetch(`${relay.url}/demo/runs`, { method: "POST" });
  assert.equal(res.status, 200);
  return (await res.json()).run;
}

/**
 * Resolves with `check()`'s first truthy value (it may be async), checking every `every` ms;
 * fails with `what` after `ms`. An exception thrown by `check` fails it at once.
 */
export async function waitFor(check, what, { ms = 5_000, every = 20 } = {}) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Headless Chromium with a fresh profile; `close()` removes the profile. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install chromium)`);
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "runwire-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  // Failed loads are reported by URL below; the console line for them carries no URL.
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(`console: ${m.text()}`));
  page.on("response", (r) => r.status() >= 400 && !r.url().endsWith("/favicon.ico") && problems.push(`${r.status()} ${r.url()}`));
  return {
    page,
    problems,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot under artifacts/ and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** A run's state from the relay itself (not from the page under test). */
export async function relayState(relayUrl, run) {
  const token = await (await fetch(`${relayUrl}/demo/token?run=${encodeURIComponent(run)}`)).text();
  const res = await fetch(`${relayUrl}/v1/runs/${encodeURIComponent(run)}`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET /v1/runs/${run}: ${res.status}`);
  return res.json();
}

/**
 * Waits for the page to show `run` finished and checks that it shows each of the run's events
 * once, in order, and the run's final status, as the relay itself reports them.
 */
export async function expectWholeRun(page, relay, run) {
  await page.waitForSelector(`#run[data-run="${run}"]`);
  await page.waitForFunction(() => ["completed", "failed"].includes(document.querySelector("#status")?.textContent ?? ""), null, {
    timeout: 60_000,
  });
  const truth = await relayState(relay.url, run);
  assert.equal(await page.textContent("#status"), truth.state.status);
  await page.waitForFunction((n) => document.querySelectorAll("#events li").length >= n, truth.seq, { timeout: 5_000 });
  const shown = await page.$$eval("#events li", (lis) => lis.map((li) => [Number(li.dataset.seq), li.dataset.run]));
  assert.deepEqual(
    shown,
    Array.from({ length: truth.seq }, (_, i) => [i + 1, run]),
  );
  assert.equal(await page.textContent("#ended"), truth.state.status);
}
