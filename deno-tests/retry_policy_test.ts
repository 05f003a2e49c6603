/**
 * The retry policy as Postgres sees it: after each failure the message's
 * `vt` is set to the failure time plus the policy's delay, and the message
 * runs again when that time comes. Delays are read from the database: the
 * failure time is `attempt_errors.failed_at` and the retry time is the
 * queue row's `vt` before the next read, both written by the same
 * statement, so their difference is the delay the worker chose.
 */

import assert from "node:assert/strict";
import {
  type HandlerContext,
  NonRetryableError,
  RetryAfterError,
} from "../js/mod.ts";
import {
  attemptErrors,
  deadLetters,
  queueRows,
  send,
  sendBatch,
  type Sql,
  waitFor,
} from "./support/db.ts";
import { secondsBetween, withQueue } from "./support/worker_fixture.ts";

/** Slack for clock readings taken inside one statement, in seconds. */
const SAME_STATEMENT_S = 0.05;

/** A failed attempt and the visibility time the retry gave the message. */
interface ScheduledRetry {
  msgId: string;
  attempt: number;
  failedAt: Date;
  vt: Date;
  /** `vt - failedAt` in seconds: the delay the worker chose. */
  delayS: number;
}

/**
 * Failed attempts whose retry is still pending: the queue row still has
 * the read count of the failed attempt, so its `vt` is the one the retry
 * set (the next read would raise the read count and move `vt` on).
 */
async function pendingRetries(
  sql: Sql,
  queue: string,
): Promise<ScheduledRetry[]> {
  const rows = await sql<
    { msg_id: string; attempt: number; failed_at: Date; vt: Date }[]
  >`
    select e.msg_id, e.attempt, e.failed_at, q.vt
    from edge_worker.attempt_errors as e
    join ${sql(`pgmq.q_${queue}`)} as q
      on q.msg_id = e.msg_id and q.read_ct = e.attempt
    where e.queue_name = ${queue}
    order by e.id`;
  return rows.map((row) => ({
    msgId: row.msg_id,
    attempt: row.attempt,
    failedAt: row.failed_at,
    vt: row.vt,
    delayS: secondsBetween(row.failed_at, row.vt),
  }));
}

/**
 * Polls {@linkcode pendingRetries} until `done` says enough were seen and
 * returns every one seen, once per message and attempt.
 */
async function collectRetries(
  sql: Sql,
  queue: string,
  done: (seen: ScheduledRetry[]) => boolean,
  timeoutMs: number,
): Promise<ScheduledRetry[]> {
  const seen = new Map<string, ScheduledRetry>();
  await waitFor(async () => {
    for (const retry of await pendingRetries(sql, queue)) {
      seen.set(`${retry.msgId}/${retry.attempt}`, retry);
    }
    return done([...seen.values()]);
  }, {
    timeoutMs,
    intervalMs: 25,
    description: `retries scheduled on ${queue}`,
  });
  return [...seen.values()];
}

function assertNear(actual: number, expected: number, slack: number): void {
  assert.ok(
    Math.abs(actual - expected) <= slack,
    `${actual} is not within ${slack} of ${expected}`,
  );
}

Deno.test(
  "exponential retry delays double from delaySeconds and stop at the cap",
  () =>
    withQueue("retry", async ({ sql, queue, start }) => {
      start(() => {
        throw new Error("always fails");
      }, {
        retry: {
          limit: 4,
          strategy: "exponential",
          delaySeconds: 1,
          maxDelaySeconds: 4,
        },
      });
      const msgId = await send(sql, queue, { job: "flaky" });
      const expectedDelays = [1, 2, 4, 4];

      const retries = await collectRetries(
        sql,
        queue,
        (seen) => seen.length === expectedDelays.length,
        25_000,
      );
      await waitFor(async () => (await deadLetters(sql, queue)).length === 1, {
        timeoutMs: 5_000,
        description: "the message dead-lettered after its last attempt",
      });

      assert.deepEqual(retries.map((r) => [r.msgId, r.attempt]), [
        [msgId, 1],
        [msgId, 2],
        [msgId, 3],
        [msgId, 4],
      ]);
      retries.forEach((retry, i) =>
        assertNear(retry.delayS, expectedDelays[i], SAME_STATEMENT_S)
      );
      // Each next failure comes right after its retry time: the message
      // was read again as soon as it became visible, not earlier.
      const failures = await attemptErrors(sql, queue);
      assert.deepEqual(failures.map((f) => f.attempt), [1, 2, 3, 4, 5]);
      for (let i = 0; i < expectedDelays.length; i++) {
        const gap = secondsBetween(
          failures[i].failed_at,
          failures[i + 1]
            .failed_at,
        );
        assert.ok(
          gap >= expectedDelays[i] - SAME_STATEMENT_S &&
            gap <= expectedDelays[i] + 0.5,
          `gap after attempt ${i + 1} was ${gap} s, ` +
            `expected ${expectedDelays[i]} s`,
        );
      }
      const [dead] = await deadLetters(sql, queue);
      assert.equal(dead.read_ct, 5);
    }),
);

/** Sends `count` always-failing messages and returns their first delays. */
async function firstDelaysWithJitter(
  jitter: "full" | "equal",
  delaySeconds: number,
  count: number,
): Promise<number[]> {
  let delays: number[] = [];
  await withQueue("jitter", async ({ sql, queue, start }) => {
    start(() => {
      throw new Error("fails to show the delay");
    }, {
      concurrency: { maxConcurrent: count },
      queue: { batchSize: count },
      retry: { limit: 1, strategy: "fixed", delaySeconds, jitter },
    });
    await sendBatch(
      sql,
      queue,
      Array.from({ length: count }, (_, n) => ({ n })),
    );
    const retries = await collectRetries(
      sql,
      queue,
      (seen) => seen.length === count,
      10_000,
    );
    assert.ok(retries.every((retry) => retry.attempt === 1));
    delays = retries.map((retry) => retry.delayS);
  });
  return delays;
}

Deno.test("full jitter keeps delays between zero and the delay", async () => {
  const delaySeconds = 8;
  const delays = await firstDelaysWithJitter("full", delaySeconds, 10);

  for (const delay of delays) {
    assert.ok(
      delay >= 0 && delay <= delaySeconds + SAME_STATEMENT_S,
      `delay ${delay} s outside [0, ${delaySeconds}]`,
    );
  }
  // Ten draws that all round to the same whole second would mean the
  // delay is not randomised at all.
  const distinct = new Set(delays.map((delay) => Math.round(delay)));
  assert.ok(distinct.size > 1, `all delays equal: ${delays.join(", ")}`);
});

Deno.test("equal jitter keeps delays in the upper half", async () => {
  const delaySeconds = 8;
  const delays = await firstDelaysWithJitter("equal", delaySeconds, 10);

  for (const delay of delays) {
    assert.ok(
      delay >= delaySeconds / 2 - SAME_STATEMENT_S &&
        delay <= delaySeconds + SAME_STATEMENT_S,
      `delay ${delay} s outside [${delaySeconds / 2}, ${delaySeconds}]`,
    );
  }
  const distinct = new Set(delays.map((delay) => Math.round(delay)));
  assert.ok(distinct.size > 1, `all delays equal: ${delays.join(", ")}`);
});

Deno.test("a retry-after error sets the next attempt its own delay", () =>
  withQueue("retry_after", async ({ sql, queue, start }) => {
    const attempts: number[] = [];
    start((_payload: unknown, ctx: HandlerContext) => {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new RetryAfterError("rate limited", 3_000);
    }, { retry: { limit: 3, strategy: "fixed", delaySeconds: 30 } });
    const msgId = await send(sql, queue, { job: "rate limited" });

    const [retry] = await collectRetries(
      sql,
      queue,
      (seen) => seen.length === 1,
      5_000,
    );

    assert.equal(retry.msgId, msgId);
    assertNear(retry.delayS, 3, SAME_STATEMENT_S);
    const [failure] = await attemptErrors(sql, queue);
    assert.equal(failure.error_name, "RetryAfterError");
    assert.equal(failure.error_message, "rate limited");
    assert.deepEqual(attempts, [1]);
  }));

Deno.test("a non-retryable error dead-letters after one attempt", () =>
  withQueue("non_retryable", async ({ sql, queue, start }) => {
    const attempts: number[] = [];
    start((_payload: unknown, ctx: HandlerContext) => {
      attempts.push(ctx.attempt);
      throw new NonRetryableError("payload can never work");
    }, { retry: { limit: 5, strategy: "fixed", delaySeconds: 0 } });
    const msgId = await send(sql, queue, { job: "hopeless" });

    const [dead] = await waitFor(async () => {
      const rows = await deadLetters(sql, queue);
      return rows.length > 0 ? rows : undefined;
    }, { description: "the message dead-lettered" });

    assert.equal(dead.msg_id, msgId);
    assert.equal(dead.read_ct, 1);
    assert.equal(dead.error_name, "NonRetryableError");
    assert.equal(dead.error_message, "payload can never work");
    const failures = await attemptErrors(sql, queue);
    assert.deepEqual(
      failures.map((f) => [f.msg_id, f.attempt, f.error_name]),
      [[msgId, 1, "NonRetryableError"]],
    );
    assert.equal((await queueRows(sql, queue)).length, 0);
    assert.deepEqual(attempts, [1]);
  }));
