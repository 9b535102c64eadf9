// webpack 5 with its defaults: the `.wasm` that the package references with
// `new URL(…, import.meta.url)` becomes an asset next to the bundle.
const path = require("node:path");

module.exports = {
  mode: "production",
  entry: "../shared/run-page.js",
  output: { path: path.resolve(__dirname, "dist"), clean: true },
};
