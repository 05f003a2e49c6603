# The checks of `build.sh test`: each runs with its output shown in full and
# kept in target/logs/<name>.log, a failure does not stop the others, and a
# summary ends the run with one plain line `N passed, N failed` that adds up
# the test counts of cargo test, the SQL tests and deno test, plus one per
# lint or format check. Sourced after common.sh.
#
# shellcheck shell=bash

CHECK_NAMES=()
CHECK_PASSED=()
CHECK_FAILED=()

# run_check NAME COUNTER COMMAND...: runs COMMAND in a subshell with errexit,
# tees its output to the log, then asks COUNTER (a function reading the log)
# for "passed failed". A failed command whose log shows no failed test still
# counts one failure, so a compile error is never a silent pass.
run_check() {
  local name="$1"
  local counter="$2"
  shift 2
  local log="${LOG_DIR}/${name}.log"
  mkdir -p "${LOG_DIR}"

  step "Check: ${name}"
  local status
  set +e
  (
    set -e
    "$@"
  ) 2>&1 | tee "${log}"
  status="${PIPESTATUS[0]}"
  set -e

  local passed failed
  read -r passed failed < <("${counter}" "${log}" "${status}")
  if ((status != 0 && failed == 0)); then
    failed=1
  fi
  CHECK_NAMES+=("${name}")
  CHECK_PASSED+=("${passed}")
  CHECK_FAILED+=("${failed}")
}

# Counter for a check that is one test: the command's exit status.
count_exit_status() {
  local status="$2"
  if ((status == 0)); then
    echo "1 0"
  else
    echo "0 1"
  fi
}

# Counter for cargo test: the sum of every `test result:` line.
count_cargo_tests() {
  sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$1" |
    awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }'
}

# Counter for deno test: its closing `ok | N passed | N failed` line (the
# passed part may carry a step count in parentheses).
count_deno_tests() {
  sed -n 's/^\(ok\|FAILED\) | \([0-9]*\) passed[^|]*| \([0-9]*\) failed.*/\2 \3/p' "$1" |
    tail -n 1 | awk '{ print $1 + 0, $2 + 0 } END { if (NR == 0) print "0 0" }'
}

# Counter for TAP output (the pgTAP tests): `ok` and `not ok` lines, plus a
# failure when fewer tests ran than the plan announced.
count_tap_tests() {
  local log="$1"
  local planned passed failed
  planned="$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "${log}" | head -n 1)"
  passed="$(grep -c '^ok ' "${log}" || true)"
  failed="$(grep -c '^not ok ' "${log}" || true)"
  if [[ -z "${planned}" ]] || ((passed + failed < planned)); then
    failed=$((failed + 1))
  fi
  echo "${passed} ${failed}"
}

# Runs one pgTAP file against the local database; the file rolls back.
run_sql_tests() {
  local file="$1"
  local_psql -d "${PG_DATABASE}" --tuples-only --no-align -f "${file}"
}

# The table of checks, then the one line CI reads. Returns 1 on any failure.
print_summary() {
  local total_passed=0
  local total_failed=0
  local i
  printf '\n==> Summary\n'
  for i in "${!CHECK_NAMES[@]}"; do
    printf '    %-24s %5d passed %5d failed\n' \
      "${CHECK_NAMES[$i]}" "${CHECK_PASSED[$i]}" "${CHECK_FAILED[$i]}"
    total_passed=$((total_passed + CHECK_PASSED[i]))
    total_failed=$((total_failed + CHECK_FAILED[i]))
  done
  printf '    logs: %s\n\n' "${LOG_DIR}"
  printf '%d passed, %d failed\n' "${total_passed}" "${total_failed}"
  ((total_failed == 0))
}
