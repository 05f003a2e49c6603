/**
 * Configuration validation through the wasm module, turned into the shim's
 * error class. The rules live in Rust (`src/core/config.rs`).
 *
 * @module
 */

import { deepFreeze, type ResolvedConfig } from "./config.ts";
import { EdgeWorkerConfigError } from "./errors.ts";
import { validateConfig } from "./wasm.ts";

/** A validated configuration and the deprecation warnings it produced. */
export interface ValidatedConfig {
  /** Every group filled in, deep-frozen. */
  config: ResolvedConfig;
  /** One entry per deprecated flat key used, with what replaces it. */
  warnings: Deprecation[];
}

/** A flat key of the alpha that the configuration used. */
export interface Deprecation {
  /** The alpha's key, such as `queueName`. */
  key: string;
  /** What to write instead, such as `queue.name`. */
  replacement: string;
}

/**
 * Validates a user configuration.
 *
 * @throws {EdgeWorkerConfigError} naming the first field that is not allowed.
 */
export function resolveConfig(raw: unknown): ValidatedConfig {
  const result = validateConfig(raw);
  if (!result.ok) throw new EdgeWorkerConfigError(result.error);
  return {
    config: deepFreeze(result.config as unknown as ResolvedConfig),
    warnings: result.warnings,
  };
}
