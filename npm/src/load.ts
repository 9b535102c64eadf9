/**
 * Loading the WebAssembly module: once, lazily, the first time a client needs it (or when the app
 * calls `ready()`). Importing the package does none of it, so importing it on a server, in a test
 * runner or in a worker touches no network, no `window` and no `.wasm`.
 */
import init, { type RunwireClientOptions } from "../wasm/runwire_sdk.js";

/** Where the `.wasm` comes from (see `RunwireClientOptions.wasm`). */
export type WasmSource = NonNullable<RunwireClientOptions["wasm"]>;

let loading: Promise<void> | undefined;
let loaded = false;

/** Whether the module is instantiated, so that clients can be built synchronously. */
export function isReady(): boolean {
  return loaded;
}

/**
 * Compiles and instantiates the WebAssembly module, once; later calls return the same promise
 * (and ignore their argument). Optional: clients load it themselves when they first connect.
 * Call it early to start the download sooner, to choose where the `.wasm` comes from, or to catch
 * a loading failure (a Content-Security-Policy without `'wasm-unsafe-eval'`, a 404) in one place.
 * A failed load may be tried again.
 */
export function ready(wasm?: WasmSource): Promise<void> {
  loading ??= load(wasm).then(
    () => {
      loaded = true;
    },
    (e: unknown) => {
      loading = undefined;
      throw e;
    },
  );
  return loading;
}

async function load(wasm: WasmSource | undefined): Promise<void> {
  await init({ module_or_path: wasm ?? (await fromDisk()) });
}

interface NodeProcess {
  getBuiltinModule?(id: string): unknown;
}

/**
 * In Node (and other runtimes that load the package from `file:` URLs and have no `fetch` for
 * them), the bytes of the default `.wasm`, read from disk; elsewhere `undefined` (the glue then
 * fetches it). `process.getBuiltinModule` (Node >= 20.16) instead of an `import` of `node:fs`,
 * which browser bundlers would try to resolve. The path is built at run time so that bundlers do
 * not copy the `.wasm` a second time.
 */
async function fromDisk(): Promise<Uint8Array | undefined> {
  // Read into a variable first: webpack warns about `new URL(<expression>, import.meta.url)`.
  const base = import.meta.url;
  if (!base.startsWith("file:")) return undefined;
  const proc = (globalThis as { process?: NodeProcess }).process;
  if (typeof proc?.getBuiltinModule !== "function") return undefined;
  const fs = proc.getBuiltinModule("node:fs") as {
    promises: { readFile(path: URL): Promise<Uint8Array> };
  };
  const file = ["..", "wasm", "runwire_sdk_bg.wasm"].join("/");
  return fs.promises.readFile(new URL(file, base));
}
