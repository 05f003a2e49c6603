/**
 * Whatever a handler throws, the worker records it and carries on: strings,
 * `undefined`, `null`, plain objects, objects that cannot be printed, huge
 * messages and messages Postgres text cannot hold all become a retry, then
 * a dead letter with a stored error.
 */

import assert from "node:assert/strict";
import {
  archiveRows,
  attemptErrors,
  deadLetters,
  send,
  type Sql,
  waitFor,
} from "./support/db.ts";
import { withQueue } from "./support/worker_fixture.ts";

/** Largest error message the database keeps, in bytes of UTF-8. */
const MAX_STORED_MESSAGE_BYTES = 64 * 1024;

const TWO_MB_MESSAGE = "x".repeat(2 * 1024 * 1024);

/** The values handlers throw, by the name the test sends as payload. */
const HOSTILE: Readonly<Record<string, () => unknown>> = {
  string: () => "text",
  undefined: () => undefined,
  null: () => null,
  plainObject: () => ({ code: "E42", detail: "plain object" }),
  throwingToString: () => ({
    toString(): string {
      throw new Error("toString refuses");
    },
  }),
  twoMegabytes: () => new Error(TWO_MB_MESSAGE),
  nul: () => new Error("before\u0000after"),
};

/** What the database must hold for one hostile value. */
interface Stored {
  name: string;
  check: (message: string) => void;
}

const EXPECTED: Readonly<Record<string, Stored>> = {
  string: { name: "string", check: (m) => assert.equal(m, "text") },
  undefined: { name: "undefined", check: (m) => assert.equal(m, "undefined") },
  null: { name: "null", check: (m) => assert.equal(m, "null") },
  plainObject: {
    name: "Object",
    check: (m) =>
      assert.deepEqual(JSON.parse(m), { code: "E42", detail: "plain object" }),
  },
  throwingToString: {
    name: "Object",
    check: (m) => assert.ok(m.length > 0, "some placeholder text is stored"),
  },
  twoMegabytes: {
    name: "Error",
    check: (m) => {
      assert.ok(
        new TextEncoder().encode(m).length <= MAX_STORED_MESSAGE_BYTES,
        `stored message has ${m.length} characters`,
      );
      assert.ok(m.startsWith("x".repeat(60_000)), "the start is kept");
    },
  },
  nul: {
    name: "Error",
    check: (m) => {
      assert.ok(!m.includes("\u0000"), "no NUL stored");
      assert.match(m, /^before.after$/u);
    },
  },
};

/** Byte length of the stored texts, measured by Postgres. */
async function storedMessageBytes(sql: Sql, queue: string): Promise<number[]> {
  const rows = await sql<{ bytes: number }[]>`
    select octet_length(error_message) as bytes
    from edge_worker.attempt_errors
    where queue_name = ${queue}
    union all
    select octet_length(error_message)
    from edge_worker.dead_letters
    where queue_name = ${queue}`;
  return rows.map((row) => row.bytes);
}

Deno.test(
  "every kind of thrown value is retried, then dead-lettered with its text",
  () =>
    withQueue("hostile", async ({ sql, queue, start }) => {
      const worker = start((payload: { throw?: string }) => {
        if (payload.throw !== undefined) throw HOSTILE[payload.throw]();
      }, { retry: { limit: 1, strategy: "fixed", delaySeconds: 0 } });
      const kinds = Object.keys(HOSTILE);
      const idOf = new Map<string, string>();
      for (const kind of kinds) {
        idOf.set(kind, await send(sql, queue, { throw: kind }));
      }

      await waitFor(
        async () => (await deadLetters(sql, queue)).length === kinds.length,
        { description: "every hostile message dead-lettered" },
      );
      // The worker is still at work: a good message sent now succeeds.
      const goodId = await send(sql, queue, { greeting: "still here" });
      await waitFor(
        async () =>
          (await archiveRows(sql, queue)).some((row) => row.msg_id === goodId),
        { description: "a good message archived after the hostile ones" },
      );

      const dead = await deadLetters(sql, queue);
      const failures = await attemptErrors(sql, queue);
      for (const kind of kinds) {
        const msgId = idOf.get(kind);
        const expected = EXPECTED[kind];
        const letter = dead.find((row) => row.msg_id === msgId);
        assert.ok(letter !== undefined, `${kind} dead-lettered`);
        assert.equal(letter.read_ct, 2, `${kind} ran twice`);
        assert.equal(letter.error_name, expected.name, kind);
        assert.ok(letter.error_message !== null, `${kind} message stored`);
        expected.check(letter.error_message);
        const history = failures.filter((row) => row.msg_id === msgId);
        assert.deepEqual(history.map((row) => row.attempt), [1, 2], kind);
        for (const row of history) {
          assert.equal(row.error_name, expected.name, kind);
          assert.equal(row.error_message, letter.error_message, kind);
          assert.equal(row.worker_id, worker.workerId);
        }
      }
      const bytes = await storedMessageBytes(sql, queue);
      assert.ok(Math.max(...bytes) <= MAX_STORED_MESSAGE_BYTES);
      // It also stops cleanly: `done` rejects if the worker failed.
      await worker.stop();
    }),
);
