// The packed `runwire` tarball inside real Vite apps (tests/npm-react, tests/npm-vue), built by
// scripts/test-npm.sh and served by a relay of our own, in headless Chromium.

import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { startRelay, launchBrowser, screenshot, relayState, ROOT } from "./lib.mjs";

async function subscriptions(relay) {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const m = /^runwire_subscriptions (\d+)$/m.exec(text);
  assert.ok(m, "runwire_subscriptions in /metrics");
  return Number(m[1]);
}

async function waitFor(check, what, ms = 5_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startRun(relay) {
  const res = await fetch(`${relay.url}/demo/runs`, { method: "POST" });
  assert.equal(res.status, 200);
  return (await res.json()).run;
}

/** Waits for the app to show `run` finished and checks it shows each of its events once. */
async function expectWholeRun(page, relay, run) {
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

for (const framework of ["react", "vue"]) {
  describe(`runwire/${framework} in a Vite app`, () => {
    let relay;
    let browser;
    before(async () => {
      relay = await startRelay(["--web-dir", join(ROOT, `tests/npm-${framework}/dist`)]);
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await relay?.stop();
    });

    test("useRun renders a live run, switches runs, and cleans up", { timeout: 120_000 }, async () => {
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
