/**
 * What the Supabase Edge Runtime adds to an isolate, for a function run by
 * the local edge host (`edge_host.ts`) in a plain `deno run`. The host's
 * generated wrapper imports this module before the function's `index.ts`:
 *
 * - `globalThis.EdgeRuntime.waitUntil`, which keeps track of pending work;
 * - `Deno.serve`, forced onto `127.0.0.1:<EDGE_HOST_PORT>`;
 * - `beforeunload` (a `CustomEvent` with `detail.reason`, as the runtime
 *   sends it) after `EDGE_HOST_WALL_CLOCK_MS`, or on a POST to `RETIRE_PATH`;
 * - once retired and all `waitUntil` work has settled, the server shuts down
 *   so the process can end by itself, as the runtime ends an isolate whose
 *   work is done. Anything still holding the event loop then shows up as
 *   the host's hard kill.
 *
 * The host reads the JSON lines this module prints (component `edge_host`).
 * Only `--allow-net --allow-env` are needed.
 *
 * @module
 */

import type {
  EdgeRuntimeGlobal,
  EdgeRuntimeHost,
} from "../../js/edge_runtime.d.ts";
import {
  HOST_COMPONENT,
  PORT_ENV,
  RETIRE_PATH,
  WALL_CLOCK_ENV,
} from "./edge_protocol.ts";

const port = Number(Deno.env.get(PORT_ENV));
const wallClockMs = Number(Deno.env.get(WALL_CLOCK_ENV));
if (!Number.isInteger(port) || !Number.isFinite(wallClockMs)) {
  throw new TypeError(`${PORT_ENV} and ${WALL_CLOCK_ENV} must be numbers`);
}

const pending = new Set<Promise<unknown>>();
let server: Deno.HttpServer | undefined;
let retired = false;

function report(event: string, fields: Record<string, unknown> = {}): void {
  console.error(
    JSON.stringify({ component: HOST_COMPONENT, event, ...fields }),
  );
}

const runtime: EdgeRuntimeGlobal = {
  waitUntil(promise) {
    const tracked = Promise.resolve(promise).then(() => {}, () => {});
    pending.add(tracked);
    tracked.finally(() => {
      pending.delete(tracked);
      finishIfIdle();
    });
  },
};
const host = globalThis as typeof globalThis & EdgeRuntimeHost;
host.EdgeRuntime = runtime;

function retire(reason: string): void {
  if (retired) return;
  retired = true;
  report("beforeunload", { reason, pending: pending.size });
  globalThis.dispatchEvent(
    new CustomEvent("beforeunload", { detail: { reason } }),
  );
  finishIfIdle();
}

function finishIfIdle(): void {
  if (!retired || pending.size > 0 || server === undefined) return;
  const closing = server;
  server = undefined;
  report("isolate_finished");
  closing.shutdown();
}

const wallClock = setTimeout(() => retire("WallClockTime"), wallClockMs);
Deno.unrefTimer(wallClock);

type ServeHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

const originalServe = Deno.serve;

/** `Deno.serve` with every overload funnelled onto the host's port. */
function serve(...args: unknown[]): Deno.HttpServer {
  let options: Record<string, unknown> = {};
  let handler: ServeHandler | undefined;
  if (typeof args[0] === "function") {
    handler = args[0] as ServeHandler;
  } else if (typeof args[0] === "object" && args[0] !== null) {
    options = { ...(args[0] as Record<string, unknown>) };
    handler = typeof args[1] === "function"
      ? args[1] as ServeHandler
      : options.handler as ServeHandler | undefined;
  }
  if (handler === undefined) {
    throw new TypeError("Deno.serve needs a handler");
  }
  if (server !== undefined) {
    throw new Error("the edge host serves one Deno.serve per isolate");
  }
  const inner = handler;
  delete options.handler;
  server = originalServe({
    ...options,
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => report("listening", { port }),
  }, (request, info) => {
    if (new URL(request.url).pathname === RETIRE_PATH) {
      retire("TerminationRequested");
      return new Response(null, { status: 202 });
    }
    return inner(request, info);
  });
  return server;
}

Deno.serve = serve as typeof Deno.serve;
