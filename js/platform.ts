/**
 * Glue to the host an edge function runs on: the HTTP trigger, keeping the
 * isolate alive, the retirement notice, and termination signals. Behind the
 * {@linkcode Platform} interface so tests and the benchmark can run a worker
 * on a plain host, or a fake one.
 *
 * @module
 */

import type { BeforeUnloadDetail, EdgeRuntimeHost } from "./edge_runtime.d.ts";

/**
 * How long after `beforeunload` the worker plans to be done, in ms. The Edge
 * Runtime sends `beforeunload` when the isolate reaches its wall-clock or CPU
 * limit and terminates it shortly afterwards; it grants no documented grace
 * period, so the worker aims to release its unstarted messages and mark
 * itself stopped within about a second. Messages still leased after that
 * come back when their visibility timeout expires.
 */
export const RETIRE_BUDGET_MS = 1_000;

/**
 * How long after SIGTERM or SIGINT the worker may drain, in ms, before the
 * process exits. A second signal exits at once.
 */
export const SIGNAL_STOP_BUDGET_MS = 3_000;

/** Exit status after a termination signal, as shells report it. */
const SIGNAL_EXIT_CODES: Readonly<Record<"SIGINT" | "SIGTERM", number>> = {
  SIGINT: 130,
  SIGTERM: 143,
};

/** What the worker needs from the host it runs on. */
export interface Platform {
  /** Registers the HTTP handler that wakes the function. */
  serve(handler: (request: Request) => Response | Promise<Response>): void;
  /** Keeps the isolate alive until `work` settles, where the host allows. */
  keepAlive(work: Promise<unknown>): void;
  /**
   * Calls `listener` when the host is about to retire the isolate, with the
   * epoch-ms deadline to be done by and the host's reason. Returns a function
   * that removes the listener.
   */
  onRetire(listener: (deadlineMs: number, cause: string) => void): () => void;
  /**
   * Calls `listener` on SIGTERM or SIGINT, where the host has signals, and
   * exits the process once the promise it returns settles. Returns a function
   * that removes the listeners.
   */
  onTerminate(
    listener: (
      signal: "SIGINT" | "SIGTERM",
      deadlineMs: number,
    ) => Promise<void>,
  ): () => void;
}

/**
 * The real host: `Deno.serve`, `EdgeRuntime.waitUntil` when present, the
 * `beforeunload` event, and Deno's signal listeners when the runtime allows
 * them (the Edge Runtime does not; the local host does).
 *
 * @example Wiring a worker to the host by hand
 * ```ts
 * import { edgePlatform } from "./platform.ts";
 *
 * const platform = edgePlatform();
 * const off = platform.onRetire((deadlineMs, cause) => {
 *   console.log(`retiring (${cause}), done by ${new Date(deadlineMs)}`);
 * });
 * off();
 * ```
 */
export function edgePlatform(): Platform {
  const host = globalThis as typeof globalThis & EdgeRuntimeHost;
  return {
    serve(handler) {
      Deno.serve(handler);
    },

    keepAlive(work) {
      host.EdgeRuntime?.waitUntil(work);
    },

    onRetire(listener) {
      const onBeforeUnload = (event: Event) => {
        listener(Date.now() + RETIRE_BUDGET_MS, retireCause(event));
      };
      globalThis.addEventListener("beforeunload", onBeforeUnload);
      return () =>
        globalThis.removeEventListener("beforeunload", onBeforeUnload);
    },

    onTerminate(listener) {
      let received = false;
      const installed: [Deno.Signal, () => void][] = [];
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        const onSignal = () => {
          const code = SIGNAL_EXIT_CODES[signal];
          if (received) Deno.exit(code);
          received = true;
          listener(signal, Date.now() + SIGNAL_STOP_BUDGET_MS)
            .finally(() => Deno.exit(code));
        };
        try {
          Deno.addSignalListener(signal, onSignal);
          installed.push([signal, onSignal]);
        } catch {
          // This runtime has no signal listeners (the Edge Runtime, or
          // SIGTERM on Windows); it ends the process its own way.
        }
      }
      return () => {
        for (const [signal, onSignal] of installed) {
          Deno.removeSignalListener(signal, onSignal);
        }
      };
    },
  };
}

/** The Edge Runtime's reason for `beforeunload`, or `"beforeunload"`. */
function retireCause(event: Event): string {
  const detail: unknown = event instanceof CustomEvent ? event.detail : null;
  if (typeof detail === "object" && detail !== null) {
    const reason = (detail as BeforeUnloadDetail).reason;
    if (typeof reason === "string" && reason !== "") return reason;
  }
  return "beforeunload";
}
