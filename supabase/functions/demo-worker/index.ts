/**
 * The demo edge function: a worker on the `demo` queue whose handler pretends
 * to do a little work. Each payload says how it should behave, so the demo
 * shows successes, retries and dead letters:
 *
 * - `"ok"` succeeds;
 * - `"fail_once"` fails its first attempt and succeeds on the retry;
 * - `"always_fail"` fails every attempt and ends in dead letters.
 *
 * Retries are fixed at one second, at most two, to keep the demo short.
 *
 * @module
 */

import { EdgeWorker, type HandlerContext } from "../../../js/mod.ts";

/** What `scripts/demo.ts` enqueues. */
interface DemoPayload {
  n: number;
  behaviour: "ok" | "fail_once" | "always_fail";
}

/** Simulated work per message, in ms. */
const WORK_MS = 5;

async function handle(
  payload: DemoPayload,
  ctx: HandlerContext<DemoPayload>,
): Promise<void> {
  await simulateWork(WORK_MS, ctx.signal);
  if (payload.behaviour === "always_fail") {
    throw new Error(`message ${payload.n} always fails`);
  }
  if (payload.behaviour === "fail_once" && ctx.attempt === 1) {
    throw new Error(`message ${payload.n} fails its first attempt`);
  }
}

/** Waits `ms`, or rejects with the signal's reason when it aborts. */
function simulateWork(ms: number, signal: AbortSignal): Promise<void> {
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
  queue: { name: "demo", batchSize: 20 },
  concurrency: { maxConcurrent: 20 },
  polling: { maxPollSeconds: 1 },
  retry: { strategy: "fixed", delaySeconds: 1, limit: 2 },
});
