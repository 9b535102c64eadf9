// Two builds of the SDK side by side in one Node process: the in-memory passes of scenario 6
// (bench/sdk/lib.mjs: `onEvent` alone, and with `onState` after every event), alternating
// between the builds round by round, so that both see the same process, the same JIT and the same
// machine load. Prints each pass's median events/s per build and the median of the paired ratios
// (B/A), after a first round that warms both up. For changes to the SDK or its build; scenario 6
// (throughput.mjs) stays the browser's word.
//
//   node --expose-gc bench/sdk/compare.mjs A B [--runs 10] [--events 10000] [--rounds 20]
//
// A and B are directories holding a build's `wasm/runwire_sdk.js` and `wasm/runwire_sdk_bg.wasm`
// (`npm/dist` after `npm/build.sh`, or a copy of it). The glue's `RunwireClient` is used directly,
// without the package's TypeScript layer. Every pass checks that each run's events arrive once
// and in order, or the comparison fails.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { fmt, inMemory, median, option } from "./lib.mjs";

const args = process.argv.slice(2);
const RUNS = option(args, "runs", 10);
const EVENTS = option(args, "events", 10_000);
const ROUNDS = option(args, "rounds", 20);
if (EVENTS < 2) throw new Error("--events: at least 2");
if (args.length !== 2) throw new Error("usage: node bench/sdk/compare.mjs A B [--runs N] [--events N] [--rounds N]");

async function load(dir, name) {
  // The build's name in the URL: two module instances even when A and B are the same directory
  // (as in CI), each with its own glue and memory.
  const glue = await import(`${pathToFileURL(resolve(dir, "wasm/runwire_sdk.js")).href}?${name}`);
  await glue.default({ module_or_path: readFileSync(resolve(dir, "wasm/runwire_sdk_bg.wasm")) });
  return glue.RunwireClient;
}
const builds = [
  ["A", await load(args[0], "A")],
  ["B", await load(args[1], "B")],
];

const PASSES = [
  ["onEvent", false],
  ["onEvent + onState", "event"],
];
const rates = new Map(PASSES.map(([name]) => [name, { A: [], B: [] }]));
// Round 0 warms both builds up (the JIT) and is not counted.
for (let round = 0; round <= ROUNDS; round++) {
  // Half the rounds start with A, half with B.
  const order = round % 2 ? [...builds].reverse() : builds;
  for (const [pass, withState] of PASSES) {
    for (const [name, Client] of order) {
      const runs = Array.from({ length: RUNS }, (_, i) => `cmp-${round}-${i}`);
      // The garbage of the pass before collected first (when Node runs with --expose-gc).
      globalThis.gc?.();
      const r = await inMemory(Client, { runs, events: EVENTS, withState });
      const want = RUNS * EVENTS;
      if (r.count !== want || r.outOfOrder || r.errors.length || r.stale || (withState && r.states < want)) {
        throw new Error(`${name}, ${pass}, round ${round + 1}: ${r.count} of ${want} events, ` +
          `${r.outOfOrder} out of order, ${r.states} states, ${r.stale} stale, errors ${r.errors.slice(0, 3)}`);
      }
      if (round > 0) rates.get(pass)[name].push((r.count / r.ms) * 1000);
    }
  }
}

console.log(`A: ${args[0]}\nB: ${args[1]}\nNode ${process.versions.node}; ${RUNS} runs × ${fmt(EVENTS)} events per pass, ${ROUNDS} rounds alternating\n`);
console.log("| pass | A, events/s | B, events/s | B/A (paired median, range) |");
console.log("| --- | ---: | ---: | ---: |");
for (const [pass, { A, B }] of rates) {
  const ratios = B.map((b, i) => b / A[i]);
  console.log(`| ${pass} | ${fmt(median(A))} | ${fmt(median(B))} | ${median(ratios).toFixed(3)}× (${Math.min(...ratios).toFixed(2)} to ${Math.max(...ratios).toFixed(2)}) |`);
}
