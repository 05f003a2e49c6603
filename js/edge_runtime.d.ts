/**
 * Ambient types for what the Supabase Edge Runtime adds to `globalThis`.
 * They are declared as an optional property of a view of `globalThis`, not
 * as a global `var`, so they cannot clash with the runtime's own
 * declarations when a project also loads those.
 *
 * @module
 */

/** The `EdgeRuntime` global of the Supabase Edge Runtime. */
export interface EdgeRuntimeGlobal {
  /**
   * Keeps the isolate alive after the response was sent, until `promise`
   * settles or the isolate reaches its wall-clock or CPU limit.
   */
  waitUntil(promise: Promise<unknown>): void;
}

/** `globalThis` as seen from code that may run on the Edge Runtime. */
export interface EdgeRuntimeHost {
  /** Present on the Edge Runtime (and the local edge host), else absent. */
  EdgeRuntime?: EdgeRuntimeGlobal;
}

/** `detail` of the `beforeunload` event the Edge Runtime dispatches. */
export interface BeforeUnloadDetail {
  /** Why the isolate retires, such as `"WallClockTime"` or `"CPUTime"`. */
  reason?: string;
}
