#!/usr/bin/env bash
# Builds the npm package `runwire` into npm/dist: the SDK compiled to wasm32, bound with
# wasm-bindgen (--target web: the .wasm is fetched with `new URL(…, import.meta.url)`, which
# bundlers such as Vite treat as an asset), and the thin
# TypeScript layer (src/, react/, vue/) compiled next to it. `npm pack` in npm/ then packs it.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
log() { printf '==> %s\n' "$*" >&2; }

command -v wasm-bindgen >/dev/null || { echo "error: wasm-bindgen not found (scripts/install-deps.sh demo)" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node not found (scripts/install-deps.sh demo)" >&2; exit 1; }

[ -x node_modules/.bin/tsc ] && [ -x node_modules/.bin/esbuild ] && [ -f node_modules/binaryen/bin/wasm-opt ] \
  || npm ci --no-audit --no-fund --loglevel=error

# `cargo rustc --crate-type cdylib`: built as the cdylib alone, LTO may inline the abort-only
# panic handler, so no panic message formatting (`core::fmt`) is linked; with the rlib crate type
# beside it, it is not, and the .wasm grows by a third. `--no-default-features`: no `std` (see
# sdk-wasm/src/bare.rs).
# With the pinned nightly in npm/toolchain (scripts/install-deps.sh installs it, with its standard
# library's sources), for two of its options: `-Zbuild-std=core,alloc` compiles the standard
# library with the crate, for size and under the same LTO, instead of linking the prebuilt one;
# `-Cpanic=immediate-abort` makes a panic (a bug: it aborts either way, see bare.rs) a trap with
# no panic machinery behind it. Everything else, tests included, builds on stable.
# (docs/benchmarks.md, "The SDK: 27,700 B to 24,957 B".)
toolchain=$(cat toolchain)
rustup run "$toolchain" rustc --version >/dev/null 2>&1 \
  || { echo "error: Rust $toolchain not found (scripts/install-deps.sh demo)" >&2; exit 1; }
log "cargo +$toolchain rustc -Zbuild-std=core,alloc -p runwire-sdk --crate-type cdylib --no-default-features (wasm32, profile wasm-release)"
(cd "$root" && CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort" \
  cargo "+$toolchain" rustc -q --locked -Zbuild-std=core,alloc -p runwire-sdk --lib --crate-type cdylib \
  --no-default-features --target wasm32-unknown-unknown --profile wasm-release)
wasm="${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/wasm-release/runwire_sdk.wasm"

rm -rf wasm dist
# --encode-into always: strings go into the .wasm by TextEncoder#encodeInto, which every browser
# and Node the package supports has, without the fallback for runtimes that lack it.
log "wasm-bindgen --target web --encode-into always"
wasm-bindgen --target web --encode-into always --out-dir wasm --out-name runwire_sdk "$wasm"
# The function table's entries that nothing can call, cleared so that wasm-opt deletes their code
# (js-sys's JSPI waker: prune-table.mjs says why, and fails once there is none to clear).
log "prune-table.mjs"
node prune-table.mjs wasm/runwire_sdk_bg.wasm
# binaryen from the npm registry (pinned in package-lock.json): it reads the features the module
# declares (reference types for wasm-bindgen's externref table among them).
# --flatten --rereloop first: every function's control flow rebuilt from its graph, which -Oz then
# folds smaller than LLVM's structure (docs/benchmarks.md, "The SDK: 28,825 B to 28,471 B").
# --converge: run -Oz until it stops shrinking; --strip-producers: the toolchain names, unused.
# --low-memory-unused: `load(p + c)` becomes `load offset=c (p)` for a constant c below 1,024,
# which differs only when p + c wraps past 2^32 into the lowest 1 KiB. Rust's pointers do not
# wrap; and where that KiB is used at all, as the deepest part of the 1 MiB shadow stack (placed
# first, growing down), a wrapped access would trap instead of reaching it: as if the stack were
# 1 KiB shorter, which overflows with a trap either way (docs/benchmarks.md, "The SDK: 27,700 B
# to 24,957 B").
log "wasm-opt --low-memory-unused --flatten --rereloop -Oz"
node node_modules/binaryen/bin/wasm-opt --low-memory-unused --flatten --rereloop -Oz --converge --strip-producers wasm/runwire_sdk_bg.wasm \
  -o wasm/runwire_sdk_bg.wasm
# Imports, exports and the import module renamed to one or two letters, in the .wasm, the glue and
# its declarations (wasm-bindgen's names are ~80 identifiers of 20 to 60 bytes, each written twice).
log "wasm-opt --minify-imports-and-exports-and-modules"
node minify-names.mjs node_modules/binaryen/bin/wasm-opt wasm/runwire_sdk_bg.wasm wasm/runwire_sdk.js wasm/runwire_sdk.d.ts
# wasm-bindgen's `initSync` goes from the glue and its declarations, so that esbuild drops its code:
# the package instantiates the module with the default export (src/load.ts), and apps cannot
# import the glue (package.json's "exports"). That export is always given one object
# (`{ module_or_path }`), so the older form it still accepts, with its deprecation warning, goes too.
log "initSync and the deprecated form of init dropped from the glue"
node -e '
const fs = require("fs");
const edit = (file, from, to) => {
  const text = fs.readFileSync(file, "utf8");
  if (text.match(new RegExp(from.source, from.flags + "g"))?.length !== 1) {
    console.error(`build.sh: ${from} is not found once in ${file}`);
    process.exit(1);
  }
  fs.writeFileSync(file, text.replace(from, to));
};
edit("wasm/runwire_sdk.js", /^export \{ initSync, __wbg_init as default \};$/m, "export { __wbg_init as default };");
edit("wasm/runwire_sdk.d.ts", /^export type SyncInitInput = [^\n]*\n\n\/\*\*\n(?: \*[^\n]*\n)* \*\/\nexport function initSync\([^\n]*\n\n/m, "");
edit(
  "wasm/runwire_sdk.js",
  /^    if \(module_or_path !== undefined\) \{\n        if \(Object\.getPrototypeOf\(module_or_path\) === Object\.prototype\) \{\n            \(\{module_or_path\} = module_or_path\)\n        \} else \{\n            console\.warn\([^\n]*\)\n        \}\n    \}\n/m,
  "    if (module_or_path !== undefined) ({module_or_path} = module_or_path);\n",
);
edit(
  "wasm/runwire_sdk.d.ts",
  / \* @param \{\{ module_or_path: InitInput \| Promise<InitInput> \}\} module_or_path - Passing `InitInput` directly is deprecated\.\n \*\n \* @returns \{Promise<InitOutput>\}\n \*\/\nexport default function __wbg_init \(module_or_path\?: \{ module_or_path: InitInput \| Promise<InitInput> \} \| InitInput \| Promise<InitInput>\): Promise<InitOutput>;$/m,
  " * @param {{ module_or_path?: InitInput | Promise<InitInput> }} options - Where the module comes from (by default the .wasm next to this file).\n *\n * @returns {Promise<InitOutput>}\n */\nexport default function __wbg_init (options?: { module_or_path?: InitInput | Promise<InitInput> }): Promise<InitOutput>;",
);
'
# The glue minified, with its snippet (src/js.rs) bundled in (its doc comments are the same as
# the .d.ts's, which keeps them).
log "esbuild --minify (JS glue)"
node_modules/.bin/esbuild wasm/runwire_sdk.js --bundle --minify --format=esm --target=es2020 --log-level=warning \
  --outfile=wasm/runwire_sdk.min.js
mv wasm/runwire_sdk.min.js wasm/runwire_sdk.js
# The generated classes declare `[Symbol.dispose]()` (for `using`); name the lib that types it,
# so that apps compiling without skipLibCheck need no extra `lib` entry (TypeScript >= 5.2).
sed -i '1i /// <reference lib="esnext.disposable" />' wasm/runwire_sdk.d.ts

log "tsc"
node_modules/.bin/tsc -p tsconfig.json
mkdir -p dist/wasm
cp wasm/runwire_sdk.js wasm/runwire_sdk.d.ts wasm/runwire_sdk_bg.wasm dist/wasm/
log "npm/dist ready ($(du -k dist/wasm/runwire_sdk_bg.wasm | cut -f1) KiB wasm)"
