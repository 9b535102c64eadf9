// Renames the .wasm's imports, exports and import module to one or two letters, and the
// wasm-bindgen glue and declarations to match (used by build.sh).
//
//   node minify-names.mjs <wasm-opt> <wasm> <glue.js> <glue.d.ts>
//
// wasm-bindgen names each import `__wbg_<name>_<hash>` from module `./<out-name>_bg.js`, and
// exports its shims under their Rust paths: ~115 names of 10 to 65 bytes, each in the .wasm and
// again in the glue. binaryen's `--minify-imports-and-exports-and-modules` renames them in the
// .wasm and prints the mapping; this script applies the mapping to the glue (the keys of the
// import object, `wasm.<export>` uses) and to the declarations' `InitOutput`. The .wasm's
// target_features section goes too (tools read it, browsers do not). It fails when a name
// of the mapping is not found where wasm-bindgen writes it, or is found elsewhere, so that a
// change in wasm-bindgen's output breaks the build instead of the package.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const [wasmOpt, wasmPath, jsPath, dtsPath] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`minify-names: ${msg}`);
  process.exit(1);
};

const out = execFileSync(
  process.execPath,
  // With the target_features section dropped: it tells tools, not browsers, what the module uses,
  // and this is the last tool to read it. `-Oz` after the renaming: the renaming renumbers the
  // functions, undoing the most-called-first order that makes calls short (104 B of code).
  [wasmOpt, "--minify-imports-and-exports-and-modules", "-Oz", "--strip-target-features", wasmPath, "-o", wasmPath],
  { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
);
const start = out.indexOf("{");
if (start < 0) fail(`no mapping in wasm-opt's output:\n${out}`);
const map = JSON.parse(out.slice(start));

// What the renamed module asks for and offers, to check the mapping against.
const module = new WebAssembly.Module(readFileSync(wasmPath));
const imports = WebAssembly.Module.imports(module);
const exports = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
const modules = new Set(imports.map((i) => i.module));
if (modules.size !== 1) fail(`expected one import module, found ${[...modules].join(", ")}`);
const [newModule] = modules;
// wasm-bindgen's glue module, and the inline JS snippets whose functions the .wasm imports
// directly (those needing no conversion of their arguments): binaryen gives them all one module.
const oldModule = "./runwire_sdk_bg.js";
for (const [m] of map.imports) {
  if (m !== oldModule && !m.startsWith("./snippets/")) fail(`unexpected import module ${m}`);
}
const importNames = new Set(imports.map((i) => i.name));
if (map.imports.length !== importNames.size) fail("the mapping does not cover every import");
if (map.exports.length !== exports.size) fail("the mapping does not cover every export");

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
// Replaces `name` (a whole identifier) wherever `before` precedes it and `after` follows it;
// fails when it occurs nowhere, unless `optional`.
function rename(text, what, before, name, after, to, file, optional = false) {
  const re = new RegExp(`(${before})${escape(name)}(?![\\w$])(${after})`, "gm");
  let n = 0;
  const result = text.replace(re, (_, b, a) => {
    n += 1;
    return `${b}${to}${a}`;
  });
  if (n === 0 && !optional) fail(`${what} ${name} not found in ${file}`);
  return result;
}

let js = readFileSync(jsPath, "utf8");
let dts = readFileSync(dtsPath, "utf8");
const snippetImports = [];
for (const [module, name, to] of map.imports) {
  if (!importNames.has(to)) fail(`import ${name} mapped to ${to}, which the module does not import`);
  if (module !== oldModule) {
    snippetImports.push([module, name, to]);
    continue;
  }
  // A key of the import object: `        __wbg_call_a410eb4b59ed5965: function(`.
  js = rename(js, "import", "^\\s+", name, ": function\\(", JSON.stringify(to), jsPath);
}
// A snippet's function is imported from the snippet's module object
// (`import * as import1 from "./snippets/…/inline1.js"`, keyed `"./snippets/…/inline1.js": import1`
// in the import object): it becomes a key of the glue module's import object, and the snippet's
// key goes.
for (const [module, name, to] of snippetImports) {
  const m = new RegExp(`^import \\* as (\\w+) from ${escape(JSON.stringify(module))};?$`, "m").exec(js);
  if (!m) fail(`no import of snippet ${module} in ${jsPath}`);
  const head = "const import0 = {\n        __proto__: null,\n";
  if (js.split(head).length !== 2) fail(`the import object is not where wasm-bindgen writes it in ${jsPath}`);
  js = js.replace(head, `${head}        ${JSON.stringify(to)}: ${m[1]}.${name},\n`);
}
for (const module of new Set(snippetImports.map(([module]) => module))) {
  const key = new RegExp(`^\\s+${escape(JSON.stringify(module))}: import\\d+,\\n`, "gm");
  if (!key.test(js)) fail(`snippet ${module} not found in the import object of ${jsPath}`);
  js = js.replace(key, "");
}
for (const [name, to] of map.exports) {
  if (!exports.has(to)) fail(`export ${name} mapped to ${to}, which the module does not export`);
  // Some exports are for the runtime, not the glue (`__abort_handler`): neither uses them.
  js = rename(js, "export", "\\bwasm\\.", name, "", to, jsPath, true);
  dts = rename(dts, "export", "^\\s+readonly ", name, ":", JSON.stringify(to), dtsPath, true);
}
js = rename(js, "module", "^\\s+", JSON.stringify(oldModule), ": import0", JSON.stringify(newModule), jsPath);

// Nothing of the old names may be left (a use the patterns above did not foresee).
for (const [module, name] of map.imports) {
  if (module === oldModule && js.includes(name)) fail(`import ${name} still used in ${jsPath}`);
}
for (const [name] of map.exports) {
  // `wasm.<name>`, or `wasm["<name>"]` and the like.
  if (new RegExp(`\\bwasm\\.${escape(name)}(?![\\w$])|["'\`]${escape(name)}["'\`]`).test(js)) {
    fail(`export ${name} still used in ${jsPath}`);
  }
  if (new RegExp(`^\\s+readonly ${escape(name)}:`, "m").test(dts)) fail(`export ${name} still declared in ${dtsPath}`);
}
writeFileSync(jsPath, js);
writeFileSync(dtsPath, dts);
console.error(`minify-names: ${map.imports.length} imports, ${map.exports.length} exports renamed`);
