/**
 * Dead letters as an operator meets them in SQL: telling them from
 * successes, reading their error history, sending them back to the queue
 * and purging them.
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
import { type QueueFixture, withQueue } from "./support/worker_fixture.ts";

/** Payload of the test messages: which one it is. */
interface Job {
  key: string;
}

/**
 * Starts a worker that refuses every job whose key is in `refused`, with
 * one retry, and sends one message per key. Resolves with the ids by key
 * once every refused job is dead-lettered and every other one archived.
 */
async function settle(
  { sql, queue, start }: QueueFixture,
  keys: string[],
  refused: Set<string>,
): Promise<Map<string, string>> {
  start((job: Job) => {
    if (refused.has(job.key)) throw new Error(`refused ${job.key}`);
  }, { retry: { limit: 1, strategy: "fixed", delaySeconds: 0 } });
  const ids = new Map<string, string>();
  for (const key of keys) ids.set(key, await send(sql, queue, { key }));
  const deadCount = keys.filter((key) => refused.has(key)).length;
  await waitFor(
    async () =>
      (await deadLetters(sql, queue)).length === deadCount &&
      (await archiveRows(sql, queue)).length === keys.length - deadCount,
    {
      description: "every message archived or dead-lettered",
    },
  );
  return ids;
}

/** The id `settle` sent `key` as. */
function idOf(ids: Map<string, string>, key: string): string {
  const id = ids.get(key);
  if (id === undefined) throw new Error(`no message was sent for ${key}`);
  return id;
}

/** What became of each message, in SQL alone. */
async function fates(sql: Sql, queue: string): Promise<Map<string, string>> {
  const rows = await sql<{ msg_id: string; fate: string }[]>`
    select msg_id, 'succeeded' as fate
    from ${sql(`pgmq.a_${queue}`)}
    union all
    select msg_id, 'dead_lettered'
    from edge_worker.dead_letters
    where queue_name = ${queue}`;
  const result = new Map<string, string>();
  for (const row of rows) {
    assert.ok(!result.has(row.msg_id), `${row.msg_id} has two fates`);
    result.set(row.msg_id, row.fate);
  }
  return result;
}

/** A row of `edge_worker.list_dead_letters`. */
interface ListedDeadLetter {
  msg_id: string;
  read_ct: number;
  message: Job;
  error_name: string;
  error_message: string;
  attempts: { attempt: number; error_name: string; error_message: string }[];
}

function listDeadLetters(sql: Sql, queue: string) {
  return sql<ListedDeadLetter[]>`
    select msg_id, read_ct, message, error_name, error_message, attempts
    from edge_worker.list_dead_letters(${queue})`;
}

Deno.test(
  "a dead-lettered message differs from a success in SQL and lists its errors",
  () =>
    withQueue("dead", async (fixture) => {
      const { sql, queue } = fixture;
      const ids = await settle(fixture, ["good", "bad"], new Set(["bad"]));

      assert.deepEqual(
        await fates(sql, queue),
        new Map([
          [idOf(ids, "good"), "succeeded"],
          [idOf(ids, "bad"), "dead_lettered"],
        ]),
      );
      const listed = await listDeadLetters(sql, queue);
      assert.equal(listed.length, 1);
      const [bad] = listed;
      assert.equal(bad.msg_id, idOf(ids, "bad"));
      assert.deepEqual(bad.message, { key: "bad" });
      assert.equal(bad.read_ct, 2);
      assert.equal(bad.error_name, "Error");
      assert.equal(bad.error_message, "refused bad");
      assert.deepEqual(
        bad.attempts.map((a) => [a.attempt, a.error_name, a.error_message]),
        [[1, "Error", "refused bad"], [2, "Error", "refused bad"]],
      );
    }),
);

Deno.test("a redriven dead letter runs again and succeeds", () =>
  withQueue("redrive", async (fixture) => {
    const { sql, queue } = fixture;
    const refused = new Set(["again", "other"]);
    const ids = await settle(fixture, ["again", "other"], refused);
    refused.delete("again");

    const [{ new_id: newId }] = await sql<{ new_id: string }[]>`
      select edge_worker.redrive_dead_letters(
        ${queue}, array[${idOf(ids, "again")}]::bigint[]) as new_id`;
    const archived = await waitFor(async () => {
      const rows = await archiveRows(sql, queue);
      return rows.find((row) => row.msg_id === newId);
    }, { description: "the redriven message archived" });

    assert.notEqual(newId, idOf(ids, "again"));
    assert.equal(archived.read_ct, 1);
    assert.deepEqual(archived.message, { key: "again" });
    assert.deepEqual(
      (await deadLetters(sql, queue)).map((row) => row.msg_id),
      [idOf(ids, "other")],
    );
    assert.equal((await fates(sql, queue)).get(newId), "succeeded");
    // The old id's history stays for the record.
    const history = (await attemptErrors(sql, queue))
      .filter((row) => row.msg_id === idOf(ids, "again"));
    assert.equal(history.length, 2);
  }));

Deno.test("purging dead letters removes them and their history", () =>
  withQueue("purge", async (fixture) => {
    const { sql, queue } = fixture;
    const ids = await settle(
      fixture,
      ["first", "second"],
      new Set(["first", "second"]),
    );

    const [recent] = await sql<{ purged: string }[]>`
      select edge_worker.purge_dead_letters(${queue}, interval '1 hour')
        as purged`;
    assert.equal(Number(recent.purged), 0, "nothing older than an hour");
    const [all] = await sql<{ purged: string }[]>`
      select edge_worker.purge_dead_letters(${queue}) as purged`;

    assert.equal(Number(all.purged), 2);
    assert.equal((await deadLetters(sql, queue)).length, 0);
    assert.equal((await listDeadLetters(sql, queue)).length, 0);
    const history = (await attemptErrors(sql, queue))
      .filter((row) =>
        [idOf(ids, "first"), idOf(ids, "second")].includes(row.msg_id)
      );
    assert.equal(history.length, 0);
  }));
