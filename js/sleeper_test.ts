import assert from "node:assert/strict";
import { Sleeper } from "./sleeper.ts";

Deno.test("sleep resolves after its delay", async () => {
  const sleeper = new Sleeper();
  const started = performance.now();
  await sleeper.sleep(20);
  assert.ok(performance.now() - started >= 15);
  assert.equal(sleeper.pending, false);
});

Deno.test(
  "a new sleep supersedes the pending one, which ends early",
  async () => {
    const sleeper = new Sleeper();
    let firstDone = false;
    const first = sleeper.sleep(60_000).then(() => firstDone = true);
    const second = sleeper.sleep(1);
    await first;
    assert.equal(firstDone, true);
    await second;
    assert.equal(sleeper.pending, false);
  },
);

Deno.test("cancel clears the timer so nothing is left pending", async () => {
  const sleeper = new Sleeper();
  const sleeping = sleeper.sleep(60_000);
  assert.equal(sleeper.pending, true);
  sleeper.cancel();
  await sleeping;
  assert.equal(sleeper.pending, false);
});

Deno.test("sleep treats NaN and negative delays as zero", async () => {
  const sleeper = new Sleeper();
  await sleeper.sleep(Number.NaN);
  await sleeper.sleep(-5);
});
