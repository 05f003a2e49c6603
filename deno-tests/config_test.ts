/**
 * Configuration at start, against real Postgres: a refused configuration
 * throws `EdgeWorkerConfigError` before any connection (no worker row, the
 * queue untouched), and the alpha's flat keys still work, each with one
 * deprecation warning.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  EdgeWorker,
  EdgeWorkerConfigError,
  type LogLevel,
  startWorker,
  type WorkerHandle,
} from "../js/mod.ts";
import {
  counts,
  queueRows,
  send,
  type Sql,
  waitFor,
  workers,
} from "./support/db.ts";
import { withQueue } from "./support/worker_fixture.ts";

/** What a refused configuration must report. */
interface Refusal {
  field: string;
  /** The refused value as JSON text, or `null` when there is none. */
  value: string | null;
  /** A phrase the allowed values must contain. */
  allowed: string;
  /** Phrases the message must contain besides field, value and allowed. */
  mentions?: string[];
}

/** A configuration for `queue` that must be refused, and how. */
interface BadConfig {
  rule: string;
  config: (queue: string) => Record<string, unknown>;
  refusal: (queue: string) => Refusal;
}

const BAD_CONFIGS: BadConfig[] = [
  {
    rule: "an unknown top-level key",
    config: (queue) => ({ queue: { name: queue }, retries: { limit: 1 } }),
    refusal: () => ({
      field: "retries",
      value: null,
      allowed: "queue, concurrency, polling, lease, retry",
      mentions: ["unknown key"],
    }),
  },
  {
    rule: "an unknown key inside a group",
    config: (queue) => ({ queue: { name: queue }, concurrency: { max: 3 } }),
    refusal: () => ({
      field: "concurrency.max",
      value: null,
      allowed: "maxConcurrent",
      mentions: ["unknown key"],
    }),
  },
  {
    rule: "an upper-case queue name",
    config: (queue) => ({ queue: { name: queue.toUpperCase() } }),
    refusal: (queue) => ({
      field: "queue.name",
      value: JSON.stringify(queue.toUpperCase()),
      allowed: "a-z",
    }),
  },
  {
    rule: "a queue name starting with a digit",
    config: (queue) => ({ queue: { name: `1${queue}` } }),
    refusal: (queue) => ({
      field: "queue.name",
      value: JSON.stringify(`1${queue}`),
      allowed: "not starting with a digit",
    }),
  },
  {
    rule: "a number above its range",
    config: (queue) => ({
      queue: { name: queue },
      concurrency: { maxConcurrent: 1001 },
    }),
    refusal: () => ({
      field: "concurrency.maxConcurrent",
      value: "1001",
      allowed: "1 to 1000",
    }),
  },
  {
    rule: "a fractional number of seconds",
    config: (queue) => ({
      queue: { name: queue },
      retry: { delaySeconds: 1.5 },
    }),
    refusal: () => ({
      field: "retry.delaySeconds",
      value: "1.5",
      allowed: "whole number",
    }),
  },
  {
    rule: "NaN, which JSON would turn into the default",
    config: (queue) => ({ queue: { name: queue, batchSize: NaN } }),
    refusal: () => ({
      field: "queue.batchSize",
      value: "NaN",
      allowed: "a finite number",
    }),
  },
  {
    rule: "an infinite number",
    config: (queue) => ({ queue: { name: queue }, retry: { limit: Infinity } }),
    refusal: () => ({
      field: "retry.limit",
      value: "Infinity",
      allowed: "a finite number",
    }),
  },
  {
    rule: "a flat key beside its grouped field",
    config: (queue) => ({
      queue: { name: queue },
      retry: { limit: 2 },
      retryLimit: 3,
    }),
    refusal: () => ({
      field: "retry.limit",
      value: null,
      allowed: "retry.limit",
      mentions: ["retryLimit"],
    }),
  },
];

for (const bad of BAD_CONFIGS) {
  Deno.test(`startWorker refuses ${bad.rule} before connecting`, () =>
    withQueue("bad_config", async ({ sql, queue }) => {
      await send(sql, queue, { n: 1 });
      const lines: string[] = [];
      let handled = 0;

      const error = await startRefused(() =>
        startWorker(
          () => {
            handled += 1;
          },
          bad.config(queue),
          {
            logSink: (_level, line) => lines.push(line),
          },
        )
      );

      assertRefusal(error, bad.refusal(queue));
      assert.equal(handled, 0);
      assert.deepEqual(lines, []);
      await assertUntouched(sql, queue);
    }));
}

Deno.test("startWorker refuses to start without a database URL", () =>
  withQueue("no_url", async ({ sql, queue }) => {
    await send(sql, queue, { n: 1 });

    const error = await startRefused(() =>
      startWorker(() => {}, { queue: { name: queue } }, {
        env: () => undefined,
      })
    );

    assert.ok(error instanceof EdgeWorkerConfigError);
    assert.equal(error.field, "connection.url");
    assert.match(error.message, /EDGE_WORKER_DB_URL/);
    await assertUntouched(sql, queue);
  }));

Deno.test(
  "EdgeWorker.start throws the same error before serving anything",
  () =>
    withQueue("bad_start", async ({ sql, queue }) => {
      await send(sql, queue, { n: 1 });

      // Were it accepted, Deno.serve would leave a listener behind and the
      // test's resource sanitizer would fail the test.
      const error = await startRefused(() =>
        EdgeWorker.start(() => {}, {
          queue: { name: queue },
          polling: { maxPollSeconds: 0 },
        })
      );

      assertRefusal(error, {
        field: "polling.maxPollSeconds",
        value: "0",
        allowed: "1 to 60",
      });
      await assertUntouched(sql, queue);
    }),
);

Deno.test(
  "the alpha's flat keys start a worker, with one warning per key",
  () =>
    withQueue("flat_keys", async ({ sql, queue }) => {
      const flat = {
        queueName: queue,
        maxConcurrent: 2,
        maxPgConnections: 2,
        maxPollSeconds: 1,
        pollIntervalMs: 20,
        retryDelay: 1,
        retryLimit: 1,
        visibilityTimeout: 10,
      };
      const logs = new Logs();
      let handled = 0;

      const worker = startWorker(
        () => {
          handled += 1;
        },
        flat,
        { logSink: logs.sink },
      );
      try {
        await send(sql, queue, { n: 1 });
        await waitFor(async () => (await counts(sql, queue)).archived === 1, {
          description: "the message archived by the flat-key worker",
        });
      } finally {
        await worker.stop();
      }

      assert.equal(handled, 1);
      const warnings = logs.event("config_key_deprecated");
      assert.deepEqual(
        warnings.map((line) => line.level),
        Object.keys(flat).map(() => "warn"),
      );
      for (const key of Object.keys(flat)) {
        const naming = warnings.filter((line) =>
          line.key === key && typeof line.replacement === "string"
        );
        assert.equal(naming.length, 1, `one warning naming ${key}`);
      }
      const { config } = worker;
      assert.equal(config.queue.name, queue);
      assert.equal(config.concurrency.maxConcurrent, 2);
      assert.equal(config.connection.maxConnections, 2);
      assert.deepEqual(config.polling, {
        maxPollSeconds: 1,
        pollIntervalMs: 20,
      });
      assert.equal(config.retry.strategy, "fixed");
      assert.equal(config.retry.delaySeconds, 1);
      assert.equal(config.retry.limit, 1);
      assert.equal(config.lease.visibilityTimeoutSeconds, 10);
    }),
);

Deno.test("a grouped configuration logs no deprecation warning", () =>
  withQueue("grouped_keys", async ({ queue }) => {
    const logs = new Logs();

    const worker = startWorker(() => {}, {
      queue: { name: queue },
      concurrency: { maxConcurrent: 2 },
      polling: { maxPollSeconds: 1, pollIntervalMs: 20 },
      logging: { level: "debug" },
    }, { logSink: logs.sink });
    await waitFor(() => logs.event("worker_started").length === 1, {
      description: "the worker started",
    });
    await worker.stop();

    assert.deepEqual(logs.event("config_key_deprecated"), []);
  }));

/** Parsed log lines of one worker. */
class Logs {
  readonly lines: Record<string, unknown>[] = [];

  readonly sink = (_level: LogLevel, line: string): void => {
    this.lines.push(JSON.parse(line));
  };

  event(name: string): Record<string, unknown>[] {
    return this.lines.filter((line) => line.event === name);
  }
}

/**
 * Calls `start`, which must throw. Should it start a worker instead, the
 * worker is stopped before the test fails, so nothing keeps running.
 */
async function startRefused(start: () => WorkerHandle | void): Promise<Error> {
  let started: WorkerHandle | void;
  try {
    started = start();
  } catch (error) {
    assert.ok(error instanceof Error, `threw a non-Error: ${String(error)}`);
    return error;
  }
  await started?.stop();
  assert.fail("the configuration was accepted");
}

function assertRefusal(error: Error, expected: Refusal): void {
  assert.ok(
    error instanceof EdgeWorkerConfigError,
    `expected an EdgeWorkerConfigError, got ${error.name}: ${error.message}`,
  );
  assert.equal(error.name, "EdgeWorkerConfigError");
  assert.equal(error.field, expected.field);
  assert.equal(error.value, expected.value);
  assert.ok(
    error.allowed.includes(expected.allowed),
    `allowed ${JSON.stringify(error.allowed)} should include ` +
      JSON.stringify(expected.allowed),
  );
  const mentions = [
    expected.field,
    expected.allowed,
    ...(expected.value === null ? [] : [expected.value]),
    ...(expected.mentions ?? []),
  ];
  for (const phrase of mentions) {
    assert.ok(
      error.message.includes(phrase),
      `message ${JSON.stringify(error.message)} should mention ` +
        JSON.stringify(phrase),
    );
  }
}

/** No worker registered on the queue and its one message never read. */
async function assertUntouched(sql: Sql, queue: string): Promise<void> {
  assert.equal((await workers(sql, queue)).length, 0);
  const [{ registered }] = await sql<{ registered: number }[]>`
    select count(*)::int as registered from edge_worker.workers
    where lower(queue_name) in (${queue}, ${`1${queue}`})`;
  assert.equal(registered, 0);
  const rows = await queueRows(sql, queue);
  assert.deepEqual(rows.map((row) => row.read_ct), [0]);
  const [{ queues }] = await sql<{ queues: number }[]>`
    select count(*)::int as queues from pgmq.meta
    where lower(queue_name) in (${queue}, ${`1${queue}`})`;
  assert.equal(queues, 1);
}
