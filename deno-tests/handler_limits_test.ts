/**
 * `handler.timeoutSeconds` against real Postgres: a handler that never
 * finishes is aborted, its attempt counts as failed, and after the grace
 * period its slot goes to the next message even though the handler itself
 * still hangs.
 */

import assert from "node:assert/strict";
import { HandlerAbortError, type HandlerContext } from "../js/mod.ts";
import {
  archiveRows,
  attemptErrors,
  queueRows,
  send,
  waitFor,
} from "./support/db.ts";
import { Gate, secondsBetween, withQueue } from "./support/worker_fixture.ts";

Deno.test(
  "a handler past its timeout is aborted, fails its attempt and frees its slot",
  () =>
    withQueue("timeout", async ({ sql, queue, start }) => {
      // The hanging handler ignores its signal; only the test lets it go.
      const hang = new Gate();
      let hungStartedMs = 0;
      let abortedMs = 0;
      let abortReason: unknown;
      let hangReturned = false;
      let nextStartedMs = 0;
      const graceMs = 200;
      const worker = start(
        async (payload: { hang: boolean }, ctx: HandlerContext) => {
          if (!payload.hang) {
            nextStartedMs = Date.now();
            return;
          }
          hungStartedMs = Date.now();
          ctx.signal.addEventListener("abort", () => {
            abortedMs = Date.now();
            abortReason = ctx.signal.reason;
          });
          await hang.passed;
          hangReturned = true;
        },
        {
          concurrency: { maxConcurrent: 1 },
          queue: { batchSize: 1 },
          handler: { timeoutSeconds: 1, graceMs },
          retry: { limit: 1, strategy: "fixed", delaySeconds: 30 },
        },
      );
      try {
        const hungId = await send(sql, queue, { hang: true });
        await waitFor(() => hungStartedMs > 0, {
          description: "the hanging handler started",
        });
        const nextId = await send(sql, queue, { hang: false });

        await waitFor(
          async () =>
            (await archiveRows(sql, queue)).some((row) =>
              row.msg_id === nextId
            ),
          { timeoutMs: 5_000, description: "the next message archived" },
        );

        assert.equal(hangReturned, false, "the first handler still hangs");
        assert.ok(abortReason instanceof HandlerAbortError);
        assert.equal(abortReason.reason, "timeout");
        assert.ok(
          abortedMs - hungStartedMs >= 900 &&
            abortedMs - hungStartedMs <= 1_500,
          `aborted ${abortedMs - hungStartedMs} ms after the start, ` +
            "expected about the 1 s timeout",
        );
        // The slot stayed with the aborted handler for the grace period.
        assert.ok(
          nextStartedMs - abortedMs >= graceMs - 50,
          `next message started ${nextStartedMs - abortedMs} ms after abort`,
        );
        const failures = await attemptErrors(sql, queue);
        assert.deepEqual(
          failures.map((f) => [f.msg_id, f.attempt, f.error_name]),
          [[hungId, 1, "HandlerTimeout"]],
        );
        const [waiting] = await queueRows(sql, queue);
        assert.equal(waiting.msg_id, hungId);
        assert.ok(
          secondsBetween(failures[0].failed_at, waiting.vt) > 29,
          "the timed-out message waits for its retry",
        );

        // When the abandoned handler finally returns, its success is not
        // recorded: the attempt already counted as failed.
        hang.open();
        await waitFor(() => hangReturned, {
          description: "the abandoned handler returned",
        });
        await worker.stop();
        assert.deepEqual(
          (await archiveRows(sql, queue)).map((row) => row.msg_id),
          [nextId],
        );
        assert.deepEqual(
          (await queueRows(sql, queue)).map((row) => [row.msg_id, row.read_ct]),
          [[hungId, 1]],
        );
      } finally {
        hang.open();
      }
    }),
);
