/**
 * Failed attempts against real Postgres and pgmq: a fixed retry delay shows
 * in the queue's `vt`, exhausted retries end in dead letters with their
 * error history, and whatever a handler throws is recorded as an error.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  archiveRows,
  attemptErrors,
  counts,
  deadLetters,
  queueRows,
  send,
  waitFor,
} from "./support/db.ts";
import { secondsBetween, withQueue } from "./support/worker_fixture.ts";

/** Retries at once, so a test need not wait for a delay it does not test. */
const RETRY_AT_ONCE = { strategy: "fixed", delaySeconds: 0 } as const;

Deno.test(
  "a fixed retry delay sets vt that far past the failure, then it succeeds",
  () =>
    withQueue("fixed_delay", async ({ sql, queue, start }) => {
      const delaySeconds = 2;
      const leaseSeconds = 30;
      const id = await send(sql, queue, { n: 1 });
      const reads: { attempt: number; leaseUntil: Date }[] = [];

      const worker = start((_payload, ctx) => {
        reads.push({ attempt: ctx.attempt, leaseUntil: ctx.record.vt });
        if (ctx.attempt === 1) throw new Error("the first attempt fails");
      }, {
        retry: { strategy: "fixed", delaySeconds, limit: 3 },
        lease: { visibilityTimeoutSeconds: leaseSeconds },
      });
      // Read the queue row while the message waits out its delay.
      const [failure] = await waitFor(async () => {
        const rows = await attemptErrors(sql, queue);
        return rows.length > 0 && rows;
      }, { description: "the first attempt's error recorded" });
      const [waiting] = await queueRows(sql, queue);
      await waitFor(async () => (await counts(sql, queue)).archived === 1, {
        description: "the message archived after its retry",
        timeoutMs: 10_000,
      });
      await worker.stop();

      assert.equal(failure.msg_id, id);
      assert.equal(failure.attempt, 1);
      assert.equal(failure.error_message, "the first attempt fails");
      assert.equal(waiting.msg_id, id);
      assert.equal(waiting.read_ct, 1);
      const delay = secondsBetween(failure.failed_at, waiting.vt);
      assert.ok(
        Math.abs(delay - delaySeconds) <= 0.2,
        `vt should be ${delaySeconds} s after the failure, was ${delay} s`,
      );

      assert.deepEqual(reads.map((read) => read.attempt), [1, 2]);
      // pgmq sets vt = read time + lease, by the database's clock.
      const retriedAt = new Date(
        reads[1].leaseUntil.getTime() - leaseSeconds * 1_000,
      );
      const lateBy = secondsBetween(waiting.vt, retriedAt);
      assert.ok(
        lateBy >= 0 && lateBy < 1.5,
        `the retry should be read soon after vt, was ${lateBy} s after it`,
      );
      const [archived] = await archiveRows(sql, queue);
      assert.equal(archived.msg_id, id);
      assert.equal(archived.read_ct, 2);
      assert.equal((await deadLetters(sql, queue)).length, 0);
    }),
);

Deno.test(
  "a message failing every allowed attempt is dead-lettered with its errors",
  () =>
    withQueue("exhausted", async ({ sql, queue, start }) => {
      const id = await send(sql, queue, { n: 1 });
      const attempts: number[] = [];

      const worker = start((_payload, ctx) => {
        attempts.push(ctx.attempt);
        throw new TypeError(`attempt ${ctx.attempt} fails`);
      }, { retry: { ...RETRY_AT_ONCE, limit: 2 } });
      await waitFor(async () => (await deadLetters(sql, queue)).length === 1, {
        description: "the message dead-lettered",
      });
      await worker.stop();

      assert.deepEqual(attempts, [1, 2, 3]);
      const [dead] = await deadLetters(sql, queue);
      assert.equal(dead.msg_id, id);
      assert.equal(dead.read_ct, 3);
      assert.deepEqual(dead.message, { n: 1 });
      assert.equal(dead.error_name, "TypeError");
      assert.equal(dead.error_message, "attempt 3 fails");
      const errors = await attemptErrors(sql, queue);
      assert.deepEqual(
        errors.map((e) => [e.msg_id, e.attempt, e.error_name, e.error_message]),
        [1, 2, 3].map((n) => [id, n, "TypeError", `attempt ${n} fails`]),
      );
      assert.deepEqual(
        await counts(sql, queue),
        { queued: 0, archived: 0, deadLettered: 1, retriedThenArchived: 0 },
      );
    }),
);

/** Values that are not errors, and how each is recorded. */
const NON_ERRORS = [
  { label: "a string", thrown: "no can do", name: "string" },
  { label: "undefined", thrown: undefined, name: "undefined" },
  { label: "null", thrown: null, name: "null" },
] as const;

for (const { label, thrown, name } of NON_ERRORS) {
  Deno.test(
    `a handler throwing ${label} is retried, then dead-lettered, recorded`,
    () =>
      withQueue("non_error", async ({ sql, queue, start }) => {
        const id = await send(sql, queue, { n: 1 });
        const text = String(thrown);
        let calls = 0;

        const worker = start(() => {
          calls += 1;
          throw thrown;
        }, { retry: { ...RETRY_AT_ONCE, limit: 1 } });
        await waitFor(
          async () => (await deadLetters(sql, queue)).length === 1,
          {
            description: "the message dead-lettered",
          },
        );
        await worker.stop();

        assert.equal(calls, 2);
        const [dead] = await deadLetters(sql, queue);
        assert.deepEqual(
          [dead.msg_id, dead.error_name, dead.error_message],
          [id, name, text],
        );
        const errors = await attemptErrors(sql, queue);
        assert.deepEqual(
          errors.map((e) => [e.attempt, e.error_name, e.error_message]),
          [[1, name, text], [2, name, text]],
        );
        assert.equal((await counts(sql, queue)).archived, 0);
      }),
  );
}
