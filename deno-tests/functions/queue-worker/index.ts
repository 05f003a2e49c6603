/**
 * An edge function for `edge_function_test.ts`: a worker on the queue named
 * by `EDGE_TEST_QUEUE` whose handler takes `EDGE_TEST_WORK_MS` per message,
 * gives up when aborted, and prints one JSON line per message it finished.
 * It also prints whether it was given read permission, which it must not
 * need. With `EDGE_TEST_START_TWICE=1` it calls `EdgeWorker.start` a second
 * time and prints the error that call throws.
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

const config = {
  queue: { name: queue, batchSize: 5 },
  concurrency: { maxConcurrent: 2 },
  polling: { maxPollSeconds: 1, pollIntervalMs: 20 },
  retry: { strategy: "fixed" as const, delaySeconds: 0, limit: 3 },
};

EdgeWorker.start(handle, config);

if (Deno.env.get("EDGE_TEST_START_TWICE") === "1") {
  try {
    EdgeWorker.start(handle, config);
  } catch (error) {
    console.log(JSON.stringify({
      component: COMPONENT,
      event: "second_start_refused",
      message: error instanceof Error ? error.message : String(error),
    }));
  }
}
