// The packed `runwire` tarball in server-rendering frameworks, built by scripts/test-pkg.sh:
// Next.js (App Router, a "use client" component using useRun; `next start`) and Nuxt 3 (a page
// using useRun, with a client created in setup or one from a client-only plugin; the built Nitro
// server). The server's HTML must render with useRun's initial
// values, then hydrate in headless Chromium without warnings and follow a live run from a relay
// of our own, every event once.

import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { PKG, startRelay, launchBrowser, screenshot, startRun, startServer, hydrationWarnings, expectLiveRun } from "./harness.mjs";

const FRAMEWORKS = [
  {
    name: "Next.js",
    start: (relay) =>
      startServer(join(PKG, "node_modules/.bin/next"), ["start", "--hostname", "127.0.0.1", "--port", "0"], {
        cwd: join(PKG, "next"),
        env: { RELAY_URL: relay.url, NEXT_TELEMETRY_DISABLED: "1" },
        pattern: /Local:\s+(http:\/\/127\.0\.0\.1:\d+)/,
      }),
    pages: { "a client created in the component": "" },
  },
  {
    name: "Nuxt",
    start: (relay) =>
      startServer(process.execPath, [join(PKG, "nuxt/.output/server/index.mjs")], {
        cwd: join(PKG, "nuxt"),
        env: { HOST: "127.0.0.1", PORT: "0", NUXT_PUBLIC_RELAY_URL: relay.url },
        pattern: /Listening on (http:\/\/127\.0\.0\.1:\d+)/,
      }),
    pages: {
      "a client created in setup": "",
      "the client of a client-only plugin": "&client=plugin",
    },
  },
];

/** The text of the element with `id` in server-rendered `html` (tags inside it removed). */
function textOf(html, id) {
  const m = new RegExp(`<(\\w+)[^>]*\\bid="${id}"[^>]*>([\\s\\S]*?)</\\1>`).exec(html);
  assert.ok(m, `#${id} in the server's HTML`);
  return m[2].replace(/<[^>]*>/g, "");
}

for (const framework of FRAMEWORKS) {
  describe(framework.name, () => {
    let relay;
    let server;
    let browser;
    before(async () => {
      relay = await startRelay();
      server = await framework.start(relay);
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
      await relay?.stop();
    });

    for (const [what, query] of Object.entries(framework.pages)) {
      const name = `${what}: renders on the server, hydrates, and follows a live run: every event once`;
      test(name, { timeout: 180_000 }, async () => {
        const run = await startRun(relay);
        const url = `${server.url}/?run=${run}${query}`;

        // Server rendering: no crash, useRun's initial values, nothing subscribed yet.
        const res = await fetch(url);
        const html = await res.text();
        assert.equal(res.status, 200, html.slice(0, 2000));
        assert.match(html, new RegExp(`id="run"[^>]*data-run="${run}"|data-run="${run}"[^>]*id="run"`));
        assert.equal(textOf(html, "connection"), "closed");
        assert.equal(textOf(html, "header-connection"), "closed");
        assert.equal(textOf(html, "status"), "none");
        assert.equal(textOf(html, "events"), "");

        // Hydrated in the browser: live, then the whole run, with no hydration warning.
        const warnings = hydrationWarnings(browser.page);
        await expectLiveRun(browser, relay, url, run);
        await screenshot(browser.page, `pkg-${`${framework.name} ${query}`.replace(/\W+/g, "-").toLowerCase()}.png`);
        assert.deepEqual(warnings, []);
        assert.deepEqual(browser.problems, []);
      });
    }
  });
}
