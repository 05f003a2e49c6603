/**
 * An edge function for `edge_function_test.ts`: a worker on the queue named
 * by `EDGE_TEST_QUEUE` whose handler takes `EDGE_TEST_WORK_MS` per message,
 * gives up when aborted, and prints one JSON line per message it finished.
 * It also prints whether it was given read permission, which it must not
 * need.
 *
 * @module
 */

import { EdgeWorker, type HandlerContext } from "../../../js/mod.ts";

/** `component` of the lines this function prints itself. */
const COMPONENT = "queue_worker";

const queue = Deno.env.get("EDGE_TEST_QUEUE");
if (queue === undefined) throw new Error("EDGE_TEST_QUEUE is not set");
const workMs = Number(Deno.env.get("EDGE_TEST_WORK_MS") ?? "0");

console.log(JSON.stringify({
  component: COMPONENT,
  event: "permissions",
  read: Deno.permissions.querySync({ name: "read" }).state,
}));

async function handle(_payload: unknown, ctx: HandlerContext): Promise<void> {
  await work(workMs, ctx.signal);
  console.log(JSON.stringify({
    component: COMPONENT,
    event: "handled",
    msg_id: ctx.msgId,
    attempt: ctx.attempt,
  }));
}

/** Waits `ms`, or rejects with the signal's reason when it aborts. */
function work(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal.throwIfAborted();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

EdgeWorker.start(handle, {
  queue: { name: queue, batchSize: 5 },
  concurrency: { maxConcurrent: 2 },
  polling: { maxPollSeconds: 1, pollIntervalMs: 20 },
  retry: { strategy: "fixed", delaySeconds: 0, limit: 3 },
});
