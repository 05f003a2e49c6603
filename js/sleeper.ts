/**
 * The driver's single timer. The driver sleeps until its next deadline and
 * re-plans whenever something happens, so only the latest sleep matters:
 * keeping one timer means a stopped worker leaves none behind to hold the
 * process open.
 *
 * @module
 */

/** Longest delay `setTimeout` honours; longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer slot holding at most one pending sleep. */
export class Sleeper {
  #timer: number | undefined;
  #wake: (() => void) | undefined;

  /**
   * Resolves after `ms` (clamped to 0 .. 2^31-1; `NaN` counts as 0). A
   * pending earlier sleep is cleared and resolved at once, early.
   */
  sleep(ms: number): Promise<void> {
    this.cancel();
    const delay = Number.isNaN(ms)
      ? 0
      : Math.min(Math.max(ms, 0), MAX_TIMER_MS);
    return new Promise((resolve) => {
      this.#wake = resolve;
      const timer = setTimeout(() => {
        // Deno 2.1 can still run a timer cleared in the turn it expires in;
        // such a late callback must not forget the newer sleep's timer, or
        // `cancel` could no longer clear it and it would outlive the worker.
        if (this.#timer === timer) {
          this.#timer = undefined;
          this.#wake = undefined;
        }
        resolve();
      }, delay);
      this.#timer = timer;
    });
  }

  /** Clears the pending timer, if any, and resolves its sleep early. */
  cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const wake = this.#wake;
    this.#timer = undefined;
    this.#wake = undefined;
    wake?.();
  }

  /** Whether a sleep is pending. */
  get pending(): boolean {
    return this.#timer !== undefined;
  }
}
