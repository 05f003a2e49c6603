# Runs the local database for the demo, the tests and the benchmark: a
# PostgreSQL 15 server on 127.0.0.1 (data in target/pg/data) with pgmq and
# the edge_worker migrations, and for the tests two pgbouncer instances in
# front of it (transaction mode and session mode). Both run as the postgres
# OS user. Sourced after common.sh; pg-ctl.sh exposes start/stop/restart to
# tests that inject faults.
#
# shellcheck shell=bash

# EDGE_WORKER_PG_HOME when set (a second cluster beside the usual one, for
# runs that restart Postgres); otherwise target/pg unless the postgres user
# cannot reach it (the repository sits under a folder closed to other users,
# such as /root): then a folder of its own under /var/tmp, one per checkout.
pg_home() {
  local preferred="${EDGE_WORKER_PG_HOME:-${ROOT}/target/pg}"
  mkdir -p "${preferred}"
  if as_postgres test -x "${preferred}"; then
    printf '%s\n' "${preferred}"
  else
    printf '/var/tmp/edge-worker-pg-%s\n' "$(printf '%s' "${ROOT}" | cksum | cut -d' ' -f1)"
  fi
}

PG_HOME="$(pg_home)"
readonly PG_HOME
readonly PG_DATA="${PG_HOME}/data"
readonly PG_RUN="${PG_HOME}/run"
readonly PG_LOG="${PG_HOME}/postgres.log"
readonly PGBOUNCER_HOME="${PG_HOME%/pg}/pgbouncer"

# Creates the cluster unless a compatible one exists, then writes the
# settings this project needs into an included file (rewritten every start,
# so a changed EDGE_WORKER_PG_PORT takes effect).
pg_init() {
  mkdir -p "${PG_HOME}" "${PG_RUN}"
  if [[ -f "${PG_DATA}/PG_VERSION" && "$(cat "${PG_DATA}/PG_VERSION")" != "${PG_MAJOR}" ]]; then
    note "discarding ${PG_DATA}: made by PostgreSQL $(cat "${PG_DATA}/PG_VERSION")"
    rm -rf "${PG_DATA}"
  fi
  chown postgres:postgres "${PG_HOME}" "${PG_RUN}"

  if [[ ! -f "${PG_DATA}/PG_VERSION" ]]; then
    step "Creating a PostgreSQL ${PG_MAJOR} cluster in ${PG_DATA}"
    rm -rf "${PG_DATA}"
    as_postgres "${PG_BIN}/initdb" --pgdata="${PG_DATA}" --username=postgres \
      --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"${PG_HOME}/initdb.log"
    printf "\ninclude_if_exists = 'edge_worker.conf'\n" |
      as_postgres tee -a "${PG_DATA}/postgresql.conf" >/dev/null
  fi

  as_postgres tee "${PG_DATA}/edge_worker.conf" >/dev/null <<EOF
# Written by build.sh on every start; edits are lost.
listen_addresses = '${PG_HOST}'
port = ${PG_PORT}
unix_socket_directories = '${PG_RUN}'
max_connections = 200
EOF
}

# True when the server of this data folder runs.
pg_running() {
  [[ -f "${PG_DATA}/PG_VERSION" ]] &&
    as_postgres "${PG_BIN}/pg_ctl" status --pgdata="${PG_DATA}" >/dev/null 2>&1
}

# Starts the server and waits until it accepts connections.
pg_start() {
  pg_init
  if pg_running; then
    note "PostgreSQL already runs on ${PG_DATA}"
    return 0
  fi

  step "Starting PostgreSQL on ${PG_HOST}:${PG_PORT} (log: ${PG_LOG})"
  ! port_open "${PG_PORT}" ||
    die "port ${PG_PORT} is taken by another server: set EDGE_WORKER_PG_PORT to a free port"
  touch "${PG_LOG}"
  chown postgres:postgres "${PG_LOG}"
  as_postgres "${PG_BIN}/pg_ctl" start --pgdata="${PG_DATA}" --log="${PG_LOG}" \
    --wait --timeout=60 >/dev/null ||
    die "PostgreSQL did not start; see ${PG_LOG}"
}

# Stops the server (fast mode: running transactions are rolled back).
pg_stop() {
  if pg_running; then
    step "Stopping PostgreSQL"
    as_postgres "${PG_BIN}/pg_ctl" stop --pgdata="${PG_DATA}" --mode=fast \
      --wait --timeout=60 >/dev/null
  fi
}

# Restarts the server, for tests that check the worker survives it.
pg_restart() {
  as_postgres "${PG_BIN}/pg_ctl" restart --pgdata="${PG_DATA}" --log="${PG_LOG}" \
    --mode=fast --wait --timeout=60 >/dev/null
}

# Creates the database and pgmq if absent, then applies every migration in
# file-name order. Migrations are idempotent, so applying them on every run
# keeps an existing database current.
pg_prepare_database() {
  if [[ -z "$(local_psql -d postgres -tAc "select 1 from pg_database where datname = '${PG_DATABASE}'")" ]]; then
    step "Creating database ${PG_DATABASE}"
    local_psql -d postgres -c "create database ${PG_DATABASE}"
  fi
  PGOPTIONS='-c client_min_messages=warning' \
    local_psql -d "${PG_DATABASE}" -c "create extension if not exists pgmq"
  pg_apply_migrations
}

# Applies supabase/migrations/*.sql in order, each in one transaction.
pg_apply_migrations() {
  local migration
  for migration in "${ROOT}"/supabase/migrations/*.sql; do
    note "applying ${migration#"${ROOT}"/}"
    PGOPTIONS='-c client_min_messages=warning' \
      local_psql -d "${PG_DATABASE}" --single-transaction -f "${migration}"
  done
}

# Exports the connection URL for child processes (demo, tests, benchmark).
pg_export_env() {
  export EDGE_WORKER_DB_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/${PG_DATABASE}"
  export EDGE_WORKER_PG_CTL="${ROOT}/scripts/pg-ctl.sh"
}

# Writes the ini of one pgbouncer instance. `auth_type = any` with a fixed
# user in the database entry is pgbouncer's trust mode that needs no user
# list; prepared statements are off in transaction mode, as on Supavisor.
pgbouncer_write_ini() {
  local mode="$1"
  local port="$2"
  local dir="${PGBOUNCER_HOME}/${mode}"
  mkdir -p "${dir}"
  cat >"${dir}/pgbouncer.ini" <<EOF
; Written by build.sh on every start; edits are lost.
[databases]
${PG_DATABASE} = host=${PG_HOST} port=${PG_PORT} dbname=${PG_DATABASE} user=postgres

[pgbouncer]
listen_addr = ${PG_HOST}
listen_port = ${port}
unix_socket_dir =
pool_mode = ${mode}
auth_type = any
max_client_conn = 500
default_pool_size = 40
ignore_startup_parameters = extra_float_digits,options
logfile = ${dir}/pgbouncer.log
pidfile = ${dir}/pgbouncer.pid
EOF
  chown -R postgres:postgres "${dir}"
  printf '%s\n' "${dir}"
}

# Starts one pgbouncer instance in the background (it forks itself).
# PORT_VARIABLE names the environment variable that overrides the port.
pgbouncer_start_one() {
  local mode="$1"
  local port="$2"
  local port_variable="$3"
  local dir
  dir="$(pgbouncer_write_ini "${mode}" "${port}")"
  pgbouncer_stop_one "${mode}"
  ! port_open "${port}" ||
    die "port ${port} is taken by another server: set ${port_variable} to a free port"
  as_postgres pgbouncer --daemon "${dir}/pgbouncer.ini" ||
    die "pgbouncer (${mode} mode) did not start; see ${dir}/pgbouncer.log"
  wait_for_port "${port}" || die "pgbouncer (${mode} mode) is not listening on ${port}"
}

# Stops the pgbouncer instance started by pgbouncer_start_one, by its pid.
pgbouncer_stop_one() {
  local mode="$1"
  local pidfile="${PGBOUNCER_HOME}/${mode}/pgbouncer.pid"
  [[ -f "${pidfile}" ]] || return 0

  local pid
  pid="$(cat "${pidfile}")"
  if kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}"
    local waited=0
    while kill -0 "${pid}" 2>/dev/null && ((waited < 50)); do
      sleep 0.1
      waited=$((waited + 1))
    done
  fi
  rm -f "${pidfile}"
}

# Both pgbouncer instances, and the URLs the tests use to reach them.
pgbouncer_start() {
  step "Starting pgbouncer: transaction mode on ${PGBOUNCER_TX_PORT}, session mode on ${PGBOUNCER_SESSION_PORT}"
  pgbouncer_start_one transaction "${PGBOUNCER_TX_PORT}" EDGE_WORKER_PGBOUNCER_TX_PORT
  pgbouncer_start_one session "${PGBOUNCER_SESSION_PORT}" EDGE_WORKER_PGBOUNCER_SESSION_PORT
  export EDGE_WORKER_PGBOUNCER_TX_URL="postgres://postgres@${PG_HOST}:${PGBOUNCER_TX_PORT}/${PG_DATABASE}"
  export EDGE_WORKER_PGBOUNCER_SESSION_URL="postgres://postgres@${PG_HOST}:${PGBOUNCER_SESSION_PORT}/${PG_DATABASE}"
}

pgbouncer_stop() {
  pgbouncer_stop_one transaction
  pgbouncer_stop_one session
}

# True when something accepts TCP connections on the loopback port.
port_open() {
  (exec 3<>"/dev/tcp/${PG_HOST}/$1") 2>/dev/null
}

# Waits up to 10 s for something to accept TCP connections on the port.
wait_for_port() {
  local port="$1"
  local tries
  for ((tries = 0; tries < 100; tries++)); do
    if port_open "${port}"; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}
