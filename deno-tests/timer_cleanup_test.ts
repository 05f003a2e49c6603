/**
 * The driver's timer (`js/sleeper.ts`) must stay under control when Deno
 * runs a timer callback late. On Deno 2.1 a timer that expires in the same
 * event-loop turn in which I/O code clears it can still fire: measured at
 * a few percent of clears made right after a Postgres reply, which is just
 * what the driver does when a reply makes it plan a new wake-up. A stopped
 * worker must leave no timer behind all the same.
 */

import assert from "node:assert/strict";
import { Sleeper } from "../js/sleeper.ts";
import { connect } from "./support/db.ts";

/** Rounds of the race; each loses with a few percent on Deno 2.1. */
const ROUNDS = 150;

Deno.test(
  "a sleep that supersedes a short one can still be cancelled",
  async () => {
    const sql = connect(undefined, { max: 1 });
    const sleeper = new Sleeper();
    let lostRound = -1;
    try {
      for (let round = 0; round < ROUNDS && lostRound < 0; round++) {
        // A short sleep that expires about when the query answers, as the
        // driver's wake-ups for due writes do.
        sleeper.sleep(2 + (round % 8));
        await sql`select pg_sleep(0.004)`;
        // The reply makes the driver plan again: a long sleep replaces the
        // short one.
        let woke = false;
        sleeper.sleep(5_000).then(() => {
          woke = true;
        });
        // Let a late callback of the short timer run, if Deno has one.
        await new Promise((resolve) => setTimeout(resolve, 12));
        // Stopping the worker cancels the sleeper; the long sleep must end.
        sleeper.cancel();
        await Promise.resolve();
        if (!woke || sleeper.pending) lostRound = round;
      }
    } finally {
      await sql.end();
    }

    assert.equal(
      lostRound,
      -1,
      `in round ${lostRound} cancel() did not reach the current sleep; its ` +
        "5 s timer is left running",
    );
  },
);
