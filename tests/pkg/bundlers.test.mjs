// The packed `runwire` tarball without a framework, built by scripts/test-pkg.sh: webpack 5,
// Vite 5 and 6 production builds (default targets), the Vite dev server, and a plain page with an
// import map and no bundler. Each page follows a live run from a relay of our own in headless
// Chromium and must show every event once.

import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PKG, startRelay, launchBrowser, screenshot, startRun, expectLiveRun } from "./harness.mjs";

/** One app served as static files by the relay itself (`--web-dir`), same origin. */
function staticApp(name, webDir, prepare = () => webDir) {
  describe(name, () => {
    let relay;
    let browser;
    let dir;
    before(async () => {
      dir = prepare();
      relay = await startRelay(["--web-dir", dir]);
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await relay?.stop();
      if (dir !== webDir) rmSync(dir, { recursive: true, force: true });
    });

    test("follows a live run: every event once", { timeout: 120_000 }, async () => {
      const run = await startRun(relay);
      await expectLiveRun(browser, relay, `${relay.url}/?run=${run}`, run);
      await screenshot(browser.page, `pkg-${name.replace(/\W+/g, "-")}.png`);
      assert.deepEqual(browser.problems, []);
    });
  });
}

staticApp("webpack 5", join(PKG, "webpack"));
staticApp("Vite 6 build", join(PKG, "vite/dist"));
staticApp("Vite 5 build", join(PKG, "vite5/dist"));
// No bundler: the page, its script and the installed package copied into one static directory.
staticApp("import map, no bundler", null, () => {
  const dir = mkdtempSync(join(tmpdir(), "runwire-importmap-"));
  cpSync(join(PKG, "importmap/index.html"), join(dir, "index.html"));
  cpSync(join(PKG, "shared/run-page.js"), join(dir, "run-page.js"));
  cpSync(join(PKG, "node_modules/runwire"), join(dir, "runwire"), { recursive: true });
  return dir;
});

describe("Vite 6 dev server", () => {
  let relay;
  let browser;
  let vite;
  let http;
  before(async () => {
    relay = await startRelay();
    browser = await launchBrowser();
    // Vite's dev server with the app's own config, on a port of our own (127.0.0.1:0): the
    // CLI takes port 0 for its default port.
    const { createServer: createViteServer } = await import("vite");
    http = createServer();
    vite = await createViteServer({
      root: join(PKG, "vite"),
      logLevel: "warn",
      appType: "spa",
      server: { middlewareMode: true, hmr: { server: http } },
    });
    http.on("request", vite.middlewares);
    await new Promise((ok) => http.listen(0, "127.0.0.1", ok));
  });
  after(async () => {
    await vite?.close();
    await new Promise((ok) => (http?.listening ? http.close(ok) : ok()));
    await browser?.close();
    await relay?.stop();
  });

  test("follows a live run: every event once", { timeout: 180_000 }, async () => {
    const run = await startRun(relay);
    const { port } = http.address();
    await expectLiveRun(browser, relay, `http://127.0.0.1:${port}/?run=${run}&relay=${encodeURIComponent(relay.url)}`, run);
    await screenshot(browser.page, "pkg-vite-dev.png");
    assert.deepEqual(browser.problems, []);
  });
});
