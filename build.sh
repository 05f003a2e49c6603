#!/usr/bin/env bash
# The one entry point of Edge Worker.
#
#   ./build.sh         install what is missing, build the wasm into js/gen/
#   ./build.sh demo    the above, start Postgres, run scripts/demo.ts
#   ./build.sh test    the above plus pgbouncer, then cargo test, clippy,
#                      rustfmt, the SQL tests, deno fmt, deno lint,
#                      deno test and a small chaos run (2 000 messages);
#                      ends with one line `N passed, N failed`
#   ./build.sh bench   the above without pgbouncer, run scripts/bench.ts
#   ./build.sh chaos   Postgres and pgbouncer as for test, then
#                      scripts/chaos.ts: a worker process drains 20 000
#                      messages through failing handlers, terminated
#                      backends, SIGKILLs and a Postgres restart, directly
#                      and through pgbouncer in transaction mode; figures in
#                      target/chaos/latest.json (restarts that Postgres)
#   ./build.sh db      start Postgres and pgbouncer and leave them running,
#                      for running single tests by hand; prints the env
#
# Installs (cached under ${XDG_CACHE_HOME:-~/.cache}/edge-worker/tools): the
# wasm32 Rust target, wasm-bindgen-cli, Deno and binaryen from npm, pgmq into
# the local PostgreSQL 15, pgbouncer and pgTAP from apt. Postgres listens on
# 127.0.0.1:${EDGE_WORKER_PG_PORT:-54329} with its data in target/pg, and
# pgbouncer on ${EDGE_WORKER_PGBOUNCER_TX_PORT:-64329} (transaction mode) and
# ${EDGE_WORKER_PGBOUNCER_SESSION_PORT:-64330} (session mode); both
# are stopped on exit unless EDGE_WORKER_KEEP_DB=1 (then
# `scripts/pg-ctl.sh stop-all` stops them later).
#
# Exported to the demo, tests and benchmark: EDGE_WORKER_DB_URL, DENO,
# EDGE_WORKER_PG_CTL (start|stop|restart the server), and for tests
# EDGE_WORKER_PGBOUNCER_TX_URL and EDGE_WORKER_PGBOUNCER_SESSION_URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly ROOT
source "${ROOT}/scripts/common.sh"
source "${ROOT}/scripts/tools.sh"
source "${ROOT}/scripts/postgres.sh"
source "${ROOT}/scripts/wasm.sh"
source "${ROOT}/scripts/checks.sh"

# Folders `deno fmt` and `deno lint` check (js/gen is excluded in deno.json).
readonly DENO_SOURCES=(js deno-tests scripts supabase/functions)

# Prints the header's list of commands; exits 0 when asked for, 2 after an
# unknown command.
usage() {
  local status="$1"
  sed -n '3,/^#$/s/^# \{0,1\}//p' "${ROOT}/build.sh" >&2
  exit "${status}"
}

# Stops what this run started, unless asked to keep the database for a
# later session (EDGE_WORKER_KEEP_DB=1).
stop_services() {
  if [[ "${EDGE_WORKER_KEEP_DB:-0}" == "1" ]]; then
    note "EDGE_WORKER_KEEP_DB=1: leaving PostgreSQL (and pgbouncer) running"
    return 0
  fi
  pgbouncer_stop
  pg_stop
}

# Postgres with pgmq and the migrations, stopped again when build.sh exits.
start_database() {
  ensure_pgmq
  trap stop_services EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  pg_start
  pg_prepare_database
  pg_export_env
}

# Deno with the environment every run of it shares: readable errors (the
# machine sets RUST_BACKTRACE=1, which Deno turns into backtraces).
run_deno() {
  (cd "${ROOT}" && RUST_BACKTRACE=0 NO_COLOR=1 "${DENO}" "$@")
}

# Only the folders that exist: a missing one is reported, not an error.
existing_deno_sources() {
  local dir
  for dir in "${DENO_SOURCES[@]}"; do
    if [[ -d "${ROOT}/${dir}" ]]; then
      printf '%s\n' "${dir}"
    else
      note "no ${dir}/ to check" >&2
    fi
  done
}

cmd_build() {
  ensure_build_tools
  build_wasm
}

cmd_demo() {
  ensure_build_tools
  start_database
  build_wasm
  step "Running scripts/demo.ts"
  run_deno run --allow-all scripts/demo.ts
}

cmd_bench() {
  ensure_build_tools
  start_database
  build_wasm
  step "Running scripts/bench.ts"
  run_deno run --allow-all scripts/bench.ts
}

# Restarts PostgreSQL during the run: use a cluster no one else is using
# (EDGE_WORKER_PG_HOME and the port variables select another one).
cmd_chaos() {
  ensure_build_tools
  start_database
  pgbouncer_start
  build_wasm
  step "Running scripts/chaos.ts full (restarts PostgreSQL)"
  run_deno run --allow-all scripts/chaos.ts full
}

# Counter for scripts/chaos.ts: its closing `N passed, N failed` line, one
# per rule and mode.
count_chaos_checks() {
  sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$1" |
    tail -n 1 | awk '{ print $1 + 0, $2 + 0 } END { if (NR == 0) print "0 0" }'
}

cmd_db() {
  ensure_build_tools
  EDGE_WORKER_KEEP_DB=1
  start_database
  pgbouncer_start
  step "Running; stop with scripts/pg-ctl.sh stop-all. Environment:"
  export -p | grep -E ' (EDGE_WORKER_[A-Z_]+|DENO|DENO_TLS_CA_STORE)='
}

cmd_test() {
  ensure_build_tools "postgresql-${PG_MAJOR}-pgtap"
  ensure_rust_components
  start_database
  pgbouncer_start

  local sources
  mapfile -t sources < <(existing_deno_sources)

  run_check wasm-build count_exit_status build_wasm
  run_check cargo-test count_cargo_tests cargo test --manifest-path "${ROOT}/Cargo.toml"
  run_check cargo-clippy count_exit_status \
    cargo clippy --manifest-path "${ROOT}/Cargo.toml" --all-targets -- -D warnings
  run_check cargo-clippy-wasm count_exit_status \
    cargo clippy --manifest-path "${ROOT}/Cargo.toml" --target wasm32-unknown-unknown --lib -- -D warnings
  run_check cargo-fmt count_exit_status cargo fmt --manifest-path "${ROOT}/Cargo.toml" --check
  run_check migrations-reapply count_exit_status pg_apply_migrations
  local sql_test
  for sql_test in "${ROOT}"/supabase/tests/*.sql; do
    run_check "sql-$(basename "${sql_test}" .sql)" count_tap_tests run_sql_tests "${sql_test}"
  done
  run_check deno-fmt count_exit_status run_deno fmt --check "${sources[@]}"
  run_check deno-lint count_exit_status run_deno lint "${sources[@]}"
  run_check deno-test count_deno_tests run_deno test --allow-all js/ deno-tests/
  run_check chaos-small count_chaos_checks \
    run_deno run --allow-all scripts/chaos.ts small

  print_summary
}

main() {
  case "${1:-}" in
    "") cmd_build ;;
    demo) cmd_demo ;;
    test) cmd_test ;;
    bench) cmd_bench ;;
    chaos) cmd_chaos ;;
    db) cmd_db ;;
    -h | --help | help) usage 0 ;;
    *)
      printf 'build.sh: unknown command %s\n\n' "$1" >&2
      usage 2
      ;;
  esac
}

main "$@"
