#!/usr/bin/env bash
# Starts, stops or restarts the local PostgreSQL that build.sh runs, for
# tests that check the worker survives a database restart. build.sh exports
# its path as EDGE_WORKER_PG_CTL; the same EDGE_WORKER_PG_PORT applies.
# `stop-all` also stops pgbouncer: the way to end what a run with
# EDGE_WORKER_KEEP_DB=1 left running.
#
#   scripts/pg-ctl.sh start|stop|restart|status|stop-all
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
source "${ROOT}/scripts/common.sh"
source "${ROOT}/scripts/postgres.sh"

case "${1:-}" in
  start) pg_start ;;
  stop) pg_stop ;;
  restart) pg_restart ;;
  status) pg_running ;;
  stop-all)
    pgbouncer_stop
    pg_stop
    ;;
  *)
    printf 'usage: %s start|stop|restart|status|stop-all\n' "$0" >&2
    exit 2
    ;;
esac
