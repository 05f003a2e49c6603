/**
 * Types of the wasm boundary: what the Rust driver calls on the shim. They
 * are generated from the Rust side (`src/driver/port.rs`) into
 * `gen/edge_worker.d.ts`, so the shim is checked against the contract the
 * driver was built with; `docs/boundary.md` explains it.
 *
 * @module
 */

import type { WorkerDriver, WorkerPort } from "./gen/edge_worker.d.ts";

export type {
  ClaimedMessage,
  ConfigValidation,
  HandlerOutcome,
  WorkerPort,
  WorkerStats,
} from "./gen/edge_worker.d.ts";

/** Why the driver aborts a running handler. */
export type AbortReason = Parameters<WorkerPort["abortHandler"]>[1];

/** Why the worker is asked to stop (`driver.requestStop`). */
export type StopReason = Parameters<WorkerDriver["requestStop"]>[0];
