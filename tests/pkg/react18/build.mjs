// Bundles the app twice with esbuild: dist/server.mjs for Node (renderPage) and dist/client.js
// for the browser. React is this app's own React 18 in both, wherever it is imported from (the
// workspace's hoisted React is Next.js's React 19, and `runwire/react` would resolve to it).
// The client bundle keeps `new URL("runwire_sdk_bg.wasm", import.meta.url)` as it is: whoever
// serves dist/client.js serves the package's .wasm next to it.
import { build } from "esbuild";
import { createRequire } from "node:module";
import { dirname } from "node:path";

const require = createRequire(import.meta.url);
const own = (name) => dirname(require.resolve(`${name}/package.json`));
const common = {
  bundle: true,
  format: "esm",
  jsx: "automatic",
  logLevel: "warning",
  alias: { react: own("react"), "react-dom": own("react-dom") },
};

await build({
  ...common,
  entryPoints: ["server.jsx"],
  outfile: "dist/server.mjs",
  platform: "node",
  // react-dom/server is CommonJS and requires Node's built-ins; an ES module has no `require`.
  banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
});
// React's development build: the one that reports every hydration mismatch it finds.
await build({
  ...common,
  entryPoints: ["client.jsx"],
  outfile: "dist/client.js",
  platform: "browser",
  define: { "process.env.NODE_ENV": '"development"' },
});
