/**
 * What the local edge host (`edge_host.ts`) and the runtime shim it loads
 * into the function (`edge_runtime_shim.ts`) agree on.
 *
 * @module
 */

/** Environment variable holding the port the function must serve on. */
export const PORT_ENV = "EDGE_HOST_PORT";

/** Environment variable holding the wall-clock budget in ms. */
export const WALL_CLOCK_ENV = "EDGE_HOST_WALL_CLOCK_MS";

/** Path that makes the shim dispatch `beforeunload` at once. */
export const RETIRE_PATH = "/__edge_host/beforeunload";

/** `component` of the JSON lines the shim prints on stderr. */
export const HOST_COMPONENT = "edge_host";
