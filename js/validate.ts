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
  /** One sentence per deprecated flat key used. */
  warnings: string[];
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
