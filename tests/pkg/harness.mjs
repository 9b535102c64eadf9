// Shared by the packaging tests: the relay and Chromium of tests/e2e, a server process started
// on 127.0.0.1:0 (Next.js, Nuxt), and the checks every app must pass.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { expectWholeRun } from "../e2e/lib.mjs";

export { startRelay, launchBrowser, screenshot, relayState, startRun, expectWholeRun, ROOT } from "../e2e/lib.mjs";

/** tests/pkg, the npm workspace holding the apps. */
export const PKG = dirname(fileURLToPath(import.meta.url));

/**
 * Runs `command args` in `cwd` and resolves once a line of its output matches `pattern`, whose
 * first group is the server's URL. `stop()` ends it (SIGTERM, then SIGKILL after 5 s).
 */
export async function startServer(command, args, { cwd, env = {}, pattern }) {
  const child = spawn(command, args, {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    detached: true, // its own process group: stop() ends the workers it forks too
  });
  let output = "";
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${command} did not start within 60 s\n${output}`)), 60_000);
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

/** Console warnings (and errors) that mention hydration, as the page logs them. */
export function hydrationWarnings(page) {
  const seen = [];
  page.on("console", (m) => {
    if (["warning", "error"].includes(m.type()) && /hydrat/i.test(m.text())) seen.push(`${m.type()}: ${m.text()}`);
  });
  return seen;
}

/** Opens `url` for a run that has just started and checks the page follows it live to its end. */
export async function expectLiveRun(browser, relay, url, run) {
  const { page, problems } = browser;
  try {
    await page.goto(url);
    // Live: the page shows the run while it is still going.
    await page.waitForFunction(() => document.querySelector("#status")?.textContent === "running", null, { timeout: 30_000 });
    assert.equal(await page.textContent("#connection"), "open");
    await expectWholeRun(page, relay, run);
  } catch (e) {
    // What the page said is usually why.
    e.message += `\npage problems: ${JSON.stringify(problems, null, 2)}\n#error: ${await page.textContent("#error").catch(() => "?")}`;
    throw e;
  }
}
