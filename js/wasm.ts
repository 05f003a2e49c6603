/**
 * The one place that loads the wasm module. The module's bytes travel inside
 * the module graph as base64 (`gen/edge_worker_wasm.js`, written by
 * `build.sh`), so an edge function needs no `--allow-read` and
 * `supabase functions deploy` bundles it like any other import. Evaluating
 * this module instantiates the wasm once per isolate.
 *
 * @module
 */

// @deno-types="./gen/edge_worker.d.ts"
import { initSync, validateConfig, WorkerDriver } from "./gen/edge_worker.js";
// @deno-types="./gen/edge_worker_wasm.d.ts"
import { wasmBase64 } from "./gen/edge_worker_wasm.js";

initSync({ module: decodeBase64(wasmBase64) });

export { validateConfig, WorkerDriver };

function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
