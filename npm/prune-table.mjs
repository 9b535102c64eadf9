// Clears from the .wasm's function table the entries that nothing can call, so that wasm-opt can
// delete their functions: js-sys's waker for JSPI tasks (`js_sys::futures::jspi::task_waker`).
//
// js-sys exports `__wbg_jspi_task_poll`, the only code that makes such a waker (and so reads the
// table entries of its four functions). wasm-bindgen deletes that export from a module without
// JSPI exports, as the SDK is (it has no Rust futures at all), but the entries stay: the waker's
// function pointers are data that binaryen cannot see through, so it keeps them, and what they
// call, in the .wasm. Each entry is set to one function that traps instead: never called, as
// nothing reads them, and it would trap rather than run anything if it were.
//
//   node prune-table.mjs module.wasm   (rewritten in place; it needs wasm-bindgen's function names)
//
// Fails when no such entry is found: a js-sys or wasm-bindgen that no longer leaves them makes
// this step unneeded, and it should go.
import { readFileSync, writeFileSync } from "node:fs";
import binaryen from "binaryen";

const [file] = process.argv.slice(2);
const dead = /^js_sys(\[[0-9a-f]+\])?::futures::jspi::task_waker::/;

const module = binaryen.readBinary(readFileSync(file));
const trap = "runwire_unreachable_table_entry";
module.addFunction(trap, binaryen.none, binaryen.none, [], module.unreachable());
let cleared = 0;
const segments = Array.from({ length: module.getNumElementSegments() }, (_, i) =>
  binaryen.getElementSegmentInfo(module.getElementSegmentByIndex(i)),
);
for (const { name, table, offset, data } of segments) {
  const at = binaryen.getExpressionInfo(offset);
  const entries = data.map((f) => (dead.test(f) ? (cleared++, trap) : f));
  if (entries.every((f, i) => f === data[i])) continue;
  if (at.id !== binaryen.ConstId) throw new Error(`prune-table.mjs: segment ${name} has no constant offset`);
  module.removeElementSegment(name);
  module.addActiveElementSegment(table, name, entries, module.i32.const(at.value));
}
if (cleared === 0) {
  console.error("prune-table.mjs: no table entry of js-sys's JSPI waker found: remove this step from npm/build.sh");
  process.exit(1);
}
if (!module.validate()) {
  console.error("prune-table.mjs: the module does not validate");
  process.exit(1);
}
writeFileSync(file, module.emitBinary());
console.error(`prune-table.mjs: ${cleared} table entries cleared`);
