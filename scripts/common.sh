# Shared settings and helpers for build.sh and the scripts it sources:
# pinned tool versions, the repository's paths, the local Postgres and
# pgbouncer addresses, and the logging helpers. Sourced, never run.
#
# shellcheck shell=bash
# The settings are read by the files that source this one:
# shellcheck disable=SC2034

# Pinned toolchain. The wasm-bindgen CLI must equal the `wasm-bindgen` crate
# pinned with `=` in Cargo.toml; build_wasm checks this.
readonly WASM_BINDGEN_VERSION="0.2.130"
readonly DENO_VERSION="2.1.14"
readonly BINARYEN_VERSION="132"
# The pgmq crate embeds the pgmq extension's SQL; 0.33.7 carries pgmq 1.11.1.
readonly PGMQ_CRATE_VERSION="0.33.7"
readonly PGMQ_VERSION="1.11.1"
readonly PG_MAJOR="15"
readonly PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"

# Paths. ROOT is set by build.sh (or pg-ctl.sh) before sourcing.
readonly CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/edge-worker"
readonly TOOLS_DIR="${CACHE_DIR}/tools"
readonly WASM_BINDGEN_DIR="${TOOLS_DIR}/wasm-bindgen-${WASM_BINDGEN_VERSION}"
readonly WASM_BINDGEN="${WASM_BINDGEN_DIR}/bin/wasm-bindgen"
readonly NODE_TOOLS_DIR="${TOOLS_DIR}/deno-${DENO_VERSION}"
readonly DENO_BIN="${NODE_TOOLS_DIR}/node_modules/.bin/deno"
readonly WASM_OPT="${NODE_TOOLS_DIR}/node_modules/.bin/wasm-opt"
readonly PGMQ_FETCH_DIR="${TOOLS_DIR}/pgmq-crate-${PGMQ_CRATE_VERSION}"
readonly LOG_DIR="${ROOT}/target/logs"

# Local Postgres: loopback only, trust auth, data under target/pg.
readonly PG_PORT="${EDGE_WORKER_PG_PORT:-54329}"
readonly PG_HOST="127.0.0.1"
readonly PG_DATABASE="edge_worker"
readonly PGBOUNCER_TX_PORT="${EDGE_WORKER_PGBOUNCER_TX_PORT:-64329}"
readonly PGBOUNCER_SESSION_PORT="${EDGE_WORKER_PGBOUNCER_SESSION_PORT:-64330}"

# Deno 2.1 reaches npm here only through the system's CA store.
export DENO_TLS_CA_STORE=system

# Prints a step heading, so the log shows where each part starts.
step() {
  printf '\n==> %s\n' "$*" >&2
}

# Prints a note that is not a step of its own.
note() {
  printf '    %s\n' "$*" >&2
}

# Prints an error and exits.
die() {
  printf 'build.sh: error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as the postgres OS user: Postgres and pgbouncer refuse root.
as_postgres() {
  runuser -u postgres -- "$@"
}

# psql against the local server as the postgres role, quiet and strict.
local_psql() {
  "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "${PG_HOST}" -p "${PG_PORT}" -U postgres "$@"
}
