/**
 * The worker's everyday promises against real Postgres and pgmq: every
 * message succeeds once, concurrency stays within its limit and reaches it,
 * two workers share a queue, and payloads and ids arrive exactly as sent.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { HandlerContext } from "../js/mod.ts";
import {
  archiveRows,
  attemptErrors,
  counts,
  deadLetters,
  queueRows,
  send,
  sendBatch,
  waitFor,
  workers,
} from "./support/db.ts";
import { withQueue } from "./support/worker_fixture.ts";

/** Resolves after `ms`: a handler's stand-in for real work. */
function work(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Counts calls per key. */
class Tally {
  readonly #counts = new Map<string, number>();

  add(key: string): void {
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
  }

  /** Keys counted other than exactly once, with their counts. */
  notOnce(): [string, number][] {
    return [...this.#counts].filter(([, n]) => n !== 1);
  }

  /** Every key counted, sorted as pgmq ids sort. */
  keys(): string[] {
    return [...this.#counts.keys()].sort(byNumericId);
  }
}

/** The ids of some rows, in their order. */
function msgIds(rows: readonly { msg_id: string }[]): string[] {
  return rows.map((row) => row.msg_id);
}

function byNumericId(a: string, b: string): number {
  const difference = BigInt(a) - BigInt(b);
  return difference < 0n ? -1 : difference > 0n ? 1 : 0;
}

Deno.test("200 messages are each archived once, on their first read", () =>
  withQueue("basics", async ({ sql, queue, start }) => {
    const total = 200;
    const payloads = Array.from({ length: total }, (_, n) => ({ n }));
    const ids = await sendBatch(sql, queue, payloads);
    const runs = new Tally();
    const seen = new Map<string, unknown>();

    const worker = start((payload, ctx) => {
      runs.add(ctx.msgId);
      seen.set(ctx.msgId, payload);
    }, { concurrency: { maxConcurrent: 20 }, queue: { batchSize: 50 } });
    await waitFor(async () => (await counts(sql, queue)).archived === total, {
      description: `${total} messages archived`,
    });
    await worker.stop();

    const archived = await archiveRows(sql, queue);
    assert.deepEqual(msgIds(archived), ids);
    assert.deepEqual(msgIds(archived.filter((row) => row.read_ct !== 1)), []);
    assert.deepEqual(archived.map((row) => row.message), payloads);
    assert.deepEqual(runs.notOnce(), []);
    assert.deepEqual(runs.keys(), ids);
    assert.deepEqual(ids.map((id) => seen.get(id)), payloads);
    assert.deepEqual(msgIds(await queueRows(sql, queue)), []);
    assert.deepEqual(msgIds(await deadLetters(sql, queue)), []);
    assert.deepEqual(msgIds(await attemptErrors(sql, queue)), []);
  }));

Deno.test("handlers in flight never exceed maxConcurrent, and reach it", () =>
  withQueue("concurrency", async ({ sql, queue, start }) => {
    const total = 30;
    const limit = 3;
    await sendBatch(sql, queue, Array.from({ length: total }, (_, n) => n));
    let running = 0;
    let mostAtOnce = 0;

    const worker = start(async () => {
      running += 1;
      mostAtOnce = Math.max(mostAtOnce, running);
      try {
        await work(40);
      } finally {
        running -= 1;
      }
    }, { concurrency: { maxConcurrent: limit }, queue: { batchSize: 10 } });
    await waitFor(async () => (await counts(sql, queue)).archived === total, {
      description: `${total} messages archived`,
    });
    await worker.stop();

    assert.equal(mostAtOnce, limit);
    assert.equal(running, 0);
  }));

Deno.test(
  "two workers on one queue share it and no message succeeds twice",
  () =>
    withQueue("shared", async ({ sql, queue, start }) => {
      const total = 100;
      const runs = new Tally();
      const byWorker = new Map<string, number>();
      const handler = async (_payload: unknown, ctx: HandlerContext) => {
        await work(15);
        runs.add(ctx.msgId);
        byWorker.set(ctx.workerId, (byWorker.get(ctx.workerId) ?? 0) + 1);
      };
      const config = { concurrency: { maxConcurrent: 4 } };

      const first = start(handler, config);
      const second = start(handler, config);
      // Both must be claiming before the messages arrive, or the first one
      // up could take them all.
      await waitFor(async () => (await workers(sql, queue)).length === 2, {
        description: "both workers registered",
      });
      const ids = await sendBatch(
        sql,
        queue,
        Array.from({ length: total }, (_, n) => n),
      );
      await waitFor(async () => (await counts(sql, queue)).archived === total, {
        description: `${total} messages archived`,
      });
      await Promise.all([first.stop(), second.stop()]);

      assert.deepEqual(runs.notOnce(), []);
      assert.deepEqual(runs.keys(), ids);
      const archived = await archiveRows(sql, queue);
      assert.deepEqual(msgIds(archived), ids);
      assert.deepEqual(msgIds(archived.filter((row) => row.read_ct !== 1)), []);
      assert.ok(
        (byWorker.get(first.workerId) ?? 0) > 0 &&
          (byWorker.get(second.workerId) ?? 0) > 0,
        `both workers should have handled messages: ${
          JSON.stringify(Object.fromEntries(byWorker))
        }`,
      );
    }),
);

Deno.test(
  "a JSON null payload reaches the handler as null and is archived",
  () =>
    withQueue("null_payload", async ({ sql, queue, start }) => {
      const id = await send(sql, queue, null);
      const payloads: unknown[] = [];

      const worker = start((payload, ctx) => {
        payloads.push(payload, ctx.record.message);
      });
      await waitFor(async () => (await counts(sql, queue)).archived === 1, {
        description: "the null message archived",
      });
      await worker.stop();

      assert.equal(payloads.length, 2);
      assert.strictEqual(payloads[0], null);
      assert.strictEqual(payloads[1], null);
      const [stored] = await sql<{ msg_id: string; kind: string | null }[]>`
      select msg_id, jsonb_typeof(message) as kind
      from ${sql(`pgmq.a_${queue}`)}`;
      assert.deepEqual(stored, { msg_id: id, kind: "null" });
      assert.deepEqual(msgIds(await queueRows(sql, queue)), []);
      assert.deepEqual(msgIds(await deadLetters(sql, queue)), []);
    }),
);

Deno.test("message ids above 2^53 are handled and archived exactly", () =>
  withQueue("big_ids", async ({ sql, queue, start }) => {
    const [{ sequence }] = await sql<{ sequence: string }[]>`
      select pg_get_serial_sequence(${`pgmq.q_${queue}`}, 'msg_id')
        as sequence`;
    assert.equal(sequence, `pgmq.q_${queue}_msg_id_seq`);
    await sql`select setval(${sequence}::regclass, 9007199254740993)`;
    // 2^53 + 2 is a double; 2^53 + 3 is not, so a float rounds it away.
    const expected = ["9007199254740994", "9007199254740995"];
    const ids = [await send(sql, queue, { n: 1 }), await send(sql, queue, 2)];
    assert.deepEqual(ids, expected);
    const seen: string[] = [];

    const worker = start((_payload, ctx) => {
      seen.push(ctx.msgId, ctx.record.msg_id);
    });
    await waitFor(async () => (await counts(sql, queue)).archived === 2, {
      description: "both messages archived",
    });
    await worker.stop();

    assert.deepEqual(seen.sort(byNumericId), [
      expected[0],
      expected[0],
      expected[1],
      expected[1],
    ]);
    const archived = await archiveRows(sql, queue);
    assert.deepEqual(msgIds(archived), expected);
    assert.deepEqual(msgIds(await queueRows(sql, queue)), []);
    assert.deepEqual(msgIds(await deadLetters(sql, queue)), []);
    assert.deepEqual(msgIds(await attemptErrors(sql, queue)), []);
  }));
