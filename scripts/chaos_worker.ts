/**
 * The worker process that `scripts/chaos.ts` starts, kills and starts again.
 * It runs one worker with {@linkcode startWorker} on the real platform glue
 * (SIGTERM drains and exits), with a handler that fails a share of its calls
 * and, before it returns successfully, records the run in `chaos_runs`
 * through `ctx.sql`. If that insert fails, the handler fails: the run was
 * not recorded, and the message is retried like any failure.
 *
 * Reads its settings from the environment:
 *
 * - `EDGE_WORKER_DB_URL`: where the worker connects (Postgres or pgbouncer);
 * - `CHAOS_WORKER_CONFIG`: the worker's configuration, as JSON;
 * - `CHAOS_HANDLER`: {@linkcode HandlerSettings}, as JSON.
 *
 * Prints the worker's log lines and, every {@linkcode PROGRESS_INTERVAL_MS},
 * a `progress` line with the number of handlers running, which the runner
 * reads when it kills the process. Needs `--allow-net --allow-env`.
 *
 * @module
 */

import { edgePlatform } from "../js/platform.ts";
import { startWorker } from "../js/worker.ts";
import type { HandlerContext } from "../js/handler.ts";

/** `component` of the lines this script prints itself. */
export const CHAOS_WORKER_COMPONENT = "chaos_worker";

/** Period of the `progress` line, in ms. */
export const PROGRESS_INTERVAL_MS = 100;

/** What the handler does with each message. */
export interface HandlerSettings {
  /** Share of calls that throw, from 0 to 1. */
  failRate: number;
  /** Shortest time a call takes before it succeeds or fails, in ms. */
  minDurationMs: number;
  /** Longest time a call takes before it succeeds or fails, in ms. */
  maxDurationMs: number;
}

/** The failure the handler throws on purpose. */
class InjectedFailure extends Error {
  override name = "InjectedFailure";
}

function readJson<T>(name: string): T {
  const text = Deno.env.get(name);
  if (text === undefined) throw new Error(`${name} is not set`);
  return JSON.parse(text) as T;
}

function print(event: string, fields: Record<string, unknown>): void {
  console.log(
    JSON.stringify({ component: CHAOS_WORKER_COMPONENT, event, ...fields }),
  );
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

async function main(): Promise<void> {
  const settings = readJson<HandlerSettings>("CHAOS_HANDLER");
  let running = 0;

  const handle = async (
    _payload: unknown,
    ctx: HandlerContext,
  ): Promise<void> => {
    running++;
    try {
      const span = settings.maxDurationMs - settings.minDurationMs;
      await pause(settings.minDurationMs + Math.random() * span, ctx.signal);
      if (Math.random() < settings.failRate) {
        throw new InjectedFailure(`failure injected into ${ctx.msgId}`);
      }
      // The run is recorded before the handler returns: a kill between
      // this insert and the archive shows up as a second run.
      await ctx.sql`
        insert into chaos_runs (queue_name, msg_id, read_ct, worker_id)
        values (${ctx.queueName}, ${ctx.msgId}::bigint, ${ctx.readCt}::int,
          ${ctx.workerId}::uuid)`;
    } finally {
      running--;
    }
  };

  const worker = startWorker(handle, readJson("CHAOS_WORKER_CONFIG"), {
    functionName: "chaos",
    platform: edgePlatform(),
  });
  print("started", { worker_id: worker.workerId, pid: Deno.pid });
  const progress = setInterval(
    () => print("progress", { worker_id: worker.workerId, running }),
    PROGRESS_INTERVAL_MS,
  );

  try {
    await worker.done;
    print("stopped", { worker_id: worker.workerId });
  } catch (error) {
    print("failed", { worker_id: worker.workerId, error: String(error) });
    Deno.exitCode = 1;
  } finally {
    clearInterval(progress);
  }
}

if (import.meta.main) {
  await main();
}
