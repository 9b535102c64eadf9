// The packed `runwire` tarball inside real Vite apps (tests/npm-react, tests/npm-vue), built by
// scripts/test-npm.sh and served by a relay of our own, in headless Chromium.

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { relayAndBrowser, screenshot, relayState, startRun, waitFor, expectWholeRun, ROOT } from "./lib.mjs";

async function subscriptions(relay) {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const m = /^runwire_subscriptions (\d+)$/m.exec(text);
  assert.ok(m, "runwire_subscriptions in /metrics");
  return Number(m[1]);
}

for (const framework of ["react", "vue"]) {
  describe(`runwire/${framework} in a Vite app`, () => {
    const held = relayAndBrowser(["--web-dir", join(ROOT, `tests/npm-${framework}/dist`)]);

    test("useRun renders a live run, switches runs, and cleans up", { timeout: 120_000 }, async () => {
      const { relay, browser } = held;
      const { page, problems } = browser;
      const first = await startRun(relay);
      await page.goto(`${relay.url}/?run=${first}`);
      // Live: the page is open before the run has finished.
      await page.waitForFunction(() => document.querySelector("#status")?.textContent === "running", null, { timeout: 15_000 });
      assert.equal(await page.textContent("#connection"), "open");
      assert.equal(await page.textContent("#header-connection"), "open");
      await expectWholeRun(page, relay, first);

      // Switching the run id resubscribes: the new run's events only, each once.
      const second = await startRun(relay);
      await page.fill("#run-input", second);
      await page.click("#follow");
      await expectWholeRun(page, relay, second);
      await screenshot(page, `npm-${framework}.png`);

      // An invalid run id is reported through `error`, not thrown.
      await page.fill("#run-input", "not a run id!");
      await page.click("#follow");
      await page.waitForFunction(() => document.querySelector("#error")?.textContent === "subscribe");
      assert.equal(await page.$$eval("#events li", (l) => l.length), 0);

      // Unmounting ends the subscription: the relay's subscription gauge drops back while the
      // run is still going.
      const third = await startRun(relay);
      await page.fill("#run-input", third);
      await page.click("#follow");
      await page.waitForFunction(() => document.querySelector("#status")?.textContent === "running", null, { timeout: 15_000 });
      assert.equal(await subscriptions(relay), 1);
      await page.click("#none");
      await page.waitForSelector("#idle");
      await waitFor(async () => (await subscriptions(relay)) === 0, "subscriptions back to 0");
      assert.equal((await relayState(relay.url, third)).state.status, "running");
      assert.deepEqual(problems, []);
    });
  });
}
