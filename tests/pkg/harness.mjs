// Shared by the packaging tests: the relay, Chromium and server processes (Next.js, Nuxt) of
// tests/e2e, and the checks every app must pass.

import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { expectWholeRun } from "../e2e/lib.mjs";

export { startRelay, startServer, launchBrowser, screenshot, relayState, startRun, expectWholeRun, ROOT } from "../e2e/lib.mjs";

/** tests/pkg, the npm workspace holding the apps. */
export const PKG = dirname(fileURLToPath(import.meta.url));

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
