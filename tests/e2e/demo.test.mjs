// The demo page end to end: `runwire demo` serving demo-web/dist, driven in headless Chromium.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { relayAndBrowser, screenshot, relayState, ROOT } from "./lib.mjs";

const held = relayAndBrowser(["--web-dir", join(ROOT, "demo-web/dist")]);

test("a run drawn live survives a cut connection with every event shown exactly once", { timeout: 90_000 }, async () => {
  const { relay, browser } = held;
  const { page, problems } = browser;
  await page.goto(relay.url + "/");
  await page.waitForSelector('[data-testid="connection"][data-state="open"]', { timeout: 15_000 });

  // Record every state the connection indicator goes through.
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="connection"]');
    window.__connStates = [el.dataset.state];
    new MutationObserver(() => window.__connStates.push(el.dataset.state)).observe(el, { attributes: true });
  });

  const started = page.waitForResponse((r) => r.url().endsWith("/demo/runs") && r.request().method() === "POST");
  await page.click('[data-testid="start"]');
  const { run } = await (await started).json();
  await page.waitForFunction((run) => document.querySelector('[data-testid="run-id"]').textContent === run, run);
  await page.waitForSelector(`[data-testid="runs"] button[data-run="${run}"].selected`);

  // The graph comes from run.started: seven nodes.
  await page.waitForSelector('[data-testid="graph"] .node[data-node="fetch"]');
  assert.equal(await page.locator('[data-testid="graph"] .node').count(), 7);
  assert.equal(await page.locator('[data-testid="graph"] .edge').count(), 7);

  // Mid-run: once the first node is done, cut the connection.
  await page.waitForSelector('[data-testid="graph"] .node[data-node="fetch"][data-status="completed"]', { timeout: 20_000 });
  assert.equal(await page.getAttribute('[data-testid="run-status"]', "data-status"), "running");
  const seqAtCut = Number(await page.locator('[data-testid="log"] li').last().getAttribute("data-seq"));
  // The client drops its socket and resumes on a new one (client.reconnect()).
  await page.click('[data-testid="cut"]');
  await page.waitForFunction(() => window.__connStates.includes("reconnecting") && window.__connStates.at(-1) === "open", null, {
    timeout: 15_000,
  });
  await page.waitForSelector('[data-testid="toast"]:has-text("Reconnected")', { timeout: 5_000 });
  await screenshot(page, "demo-e2e-cut.png");
  const states = await page.evaluate(() => window.__connStates);
  assert.deepEqual(states.slice(-3), ["open", "reconnecting", "open"], `connection states: ${states}`);

  // Let the run finish (a demo run takes 10 to 25 s).
  await page.waitForSelector('[data-testid="run-status"][data-status="completed"], [data-testid="run-status"][data-status="failed"]', {
    timeout: 60_000,
  });
  const truth = await relayState(relay.url, run);
  const status = await page.getAttribute('[data-testid="run-status"]', "data-status");
  assert.equal(status, truth.state.status);

  // Every node shows the status the relay's own fold has for it.
  const shown = await page.$$eval('[data-testid="graph"] .node', (nodes) =>
    Object.fromEntries(nodes.map((n) => [n.dataset.node, n.dataset.status])),
  );
  const expected = {};
  for (const key of Object.keys(shown)) expected[key] = truth.state.nodes.find((n) => n.key === key)?.status ?? "pending";
  assert.deepEqual(shown, expected);
  if (status === "completed") assert.ok(Object.values(shown).every((s) => s === "completed"), JSON.stringify(shown));
  else assert.equal(Object.values(shown).filter((s) => s === "failed").length, 1, JSON.stringify(shown));
  // Completed nodes carry their duration.
  const metas = await page.$$eval('[data-testid="graph"] .node[data-status="completed"] .meta', (m) => m.map((e) => e.textContent));
  assert.ok(metas.length > 0 && metas.every((t) => /^done in \d/.test(t)), JSON.stringify(metas));

  // The log shows every event of the run exactly once, in order: 1..head.
  const seqs = await page.$$eval('[data-testid="log"] li', (lis) => lis.map((li) => Number(li.dataset.seq)));
  const head = truth.seq;
  assert.ok(seqAtCut > 0 && seqAtCut < head, `cut at ${seqAtCut} of ${head}`);
  assert.deepEqual(seqs, Array.from({ length: head }, (_, i) => i + 1));
  assert.equal(await page.textContent('[data-testid="event-count"]'), String(head));
  assert.equal(await page.textContent('[data-testid="progress-text"]'), status === "completed" ? "100%" : `${Math.round(truth.state.progress)}%`);

  await screenshot(page, "demo-e2e.png");
  assert.deepEqual(problems, []);
});
