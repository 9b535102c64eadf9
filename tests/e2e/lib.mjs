// Shared by the browser and Node tests: a relay of our own on 127.0.0.1:0 and headless Chromium
// (playwright-core is loaded only by `launchBrowser`, so the Node tests need not install it).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const ARTIFACTS = join(ROOT, "artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const RUNWIRE = process.env.RUNWIRE_BIN ?? join(ROOT, "target/release/runwire");

/** Starts `runwire demo --addr 127.0.0.1:0 …args`; resolves once it prints its address. */
export async function startRelay(args = []) {
  if (!existsSync(RUNWIRE)) throw new Error(`${RUNWIRE} is missing: build it with cargo build --release -p runwire-relay`);
  const child = spawn(RUNWIRE, ["demo", "--addr", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`relay did not start within 20 s\n${stderr}`)), 20_000);
    child.once("exit", (code) => fail(new Error(`relay exited with ${code}\n${stderr}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
  });
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((ok) => child.once("exit", ok));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
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
