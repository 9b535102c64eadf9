// The packed `runwire` tarball in server-rendering frameworks, built by scripts/test-pkg.sh:
// Next.js (App Router, a "use client" component using useRun; `next start`) and Nuxt 3 (a page
// using useRun, with a client created in setup or one from a client-only plugin; the built Nitro
// server), and React 18 without a framework (react-dom/server's renderToString in this process,
// hydrateRoot in the browser; bundled with esbuild). The server's HTML must render with useRun's initial
// values, then hydrate in headless Chromium without warnings and follow a live run from a relay
// of our own, every event once.

import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { PKG, startRelay, launchBrowser, screenshot, startRun, startServer, hydrationWarnings, expectLiveRun } from "./harness.mjs";

const FRAMEWORKS = [
  {
    name: "Next.js",
    start: (relay) =>
      startServer(join(PKG, "node_modules/.bin/next"), ["start", "--hostname", "127.0.0.1", "--port", "0"], {
        cwd: join(PKG, "next"),
        env: { ...process.env, RELAY_URL: relay.url, NEXT_TELEMETRY_DISABLED: "1" },
        pattern: /Local:\s+(http:\/\/127\.0\.0\.1:\d+)/,
      }),
    pages: { "a client created in the component": "" },
  },
  {
    name: "Nuxt",
    start: (relay) =>
      startServer(process.execPath, [join(PKG, "nuxt/.output/server/index.mjs")], {
        cwd: join(PKG, "nuxt"),
        env: { ...process.env, HOST: "127.0.0.1", PORT: "0", NUXT_PUBLIC_RELAY_URL: relay.url },
        pattern: /Listening on (http:\/\/127\.0\.0\.1:\d+)/,
      }),
    pages: {
      "a client created in setup": "",
      "the client of a client-only plugin": "&client=plugin",
    },
  },
  {
    name: "React 18",
    start: startReact18,
    pages: { "a client created in the component": "" },
  },
];

/**
 * Serves tests/pkg/react18 on 127.0.0.1:0: `/` server-rendered by its React 18 (dist/server.mjs),
 * its client bundle, and the package's .wasm next to the bundle, where the bundle looks for it.
 */
async function startReact18(relay) {
  const app = join(PKG, "react18");
  const { renderPage } = await import(pathToFileURL(join(app, "dist/server.mjs")));
  const files = {
    "/client.js": [join(app, "dist/client.js"), "text/javascript"],
    "/runwire_sdk_bg.wasm": [join(PKG, "node_modules/runwire/dist/wasm/runwire_sdk_bg.wasm"), "application/wasm"],
  };
  const http = createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    try {
      if (url.pathname === "/") {
        const html = renderPage({ relay: relay.url, runId: url.searchParams.get("run") ?? "" });
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
      } else if (files[url.pathname]) {
        const [path, type] = files[url.pathname];
        res.writeHead(200, { "content-type": type }).end(await readFile(path));
      } else {
        res.writeHead(404).end();
      }
    } catch (e) {
      res.writeHead(500).end(String(e?.stack ?? e));
    }
  });
  await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    stop: () => new Promise((ok) => http.close(ok)),
  };
}

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
