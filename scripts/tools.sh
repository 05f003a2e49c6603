# Installs what build.sh needs and is missing: Debian packages, the Rust
# wasm target and components, the pinned wasm-bindgen CLI, Deno and
# binaryen from npm, and the pgmq extension files. Tools are cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/edge-worker/tools and reused when their
# version matches. Sourced by build.sh after common.sh.
#
# shellcheck shell=bash

# Installs the given Debian packages that are not installed yet. The package
# lists are refreshed once, and only when something is missing.
ensure_apt_packages() {
  local missing=()
  local package
  for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "${package}" 2>/dev/null |
      grep -q 'install ok installed'; then
      missing+=("${package}")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi

  step "Installing Debian packages: ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"
}

# Debian packages every subcommand needs; pgTAP only for `test`.
ensure_system_packages() {
  local packages=("postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}" pgbouncer)
  if ! command -v npm >/dev/null; then
    packages+=(npm)
  fi
  ensure_apt_packages "${packages[@]}" "$@"
}

# The Rust side: cargo must exist (rustup's), plus the wasm target and the
# components the test run uses.
ensure_rust() {
  command -v cargo >/dev/null ||
    die "cargo not found: install Rust with rustup first"
  command -v rustup >/dev/null ||
    die "rustup not found: the wasm target is installed with rustup"

  local targets
  targets="$(rustup target list --installed)"
  if ! grep -qx 'wasm32-unknown-unknown' <<<"${targets}"; then
    step "Adding the Rust target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
}

# clippy and rustfmt, for `build.sh test`.
ensure_rust_components() {
  local installed component
  installed="$(rustup component list --installed)"
  for component in clippy rustfmt; do
    if ! grep -q "^${component}" <<<"${installed}"; then
      step "Adding the Rust component ${component}"
      rustup component add "${component}"
    fi
  done
}

# wasm-bindgen CLI at the pinned version. `--locked` is left out on purpose:
# one locked dependency of the CLI is missing from the reachable index.
ensure_wasm_bindgen() {
  if [[ -x "${WASM_BINDGEN}" ]] &&
    [[ "$("${WASM_BINDGEN}" --version)" == "wasm-bindgen ${WASM_BINDGEN_VERSION}" ]]; then
    return 0
  fi

  step "Installing wasm-bindgen-cli ${WASM_BINDGEN_VERSION} (takes about 3 minutes)"
  cargo install wasm-bindgen-cli --version "${WASM_BINDGEN_VERSION}" \
    --root "${WASM_BINDGEN_DIR}" --force
}

# Deno and binaryen (wasm-opt) from npm, in one cached folder. Debian's
# binaryen is too old for current rustc output.
ensure_node_tools() {
  if [[ -x "${DENO_BIN}" && -x "${WASM_OPT}" ]] &&
    [[ "$("${DENO_BIN}" --version)" == "deno ${DENO_VERSION} "* ]] &&
    [[ "$("${WASM_OPT}" --version)" == "wasm-opt version ${BINARYEN_VERSION} "* ]]; then
    return 0
  fi

  step "Installing deno@${DENO_VERSION} and binaryen@${BINARYEN_VERSION} from npm"
  mkdir -p "${NODE_TOOLS_DIR}"
  npm install --prefix "${NODE_TOOLS_DIR}" --no-audit --no-fund -E \
    "deno@${DENO_VERSION}" "binaryen@${BINARYEN_VERSION}"
  [[ "$("${DENO_BIN}" --version)" == "deno ${DENO_VERSION} "* ]] ||
    die "npm installed a Deno other than ${DENO_VERSION}"
}

# The pgmq extension files in Postgres's share folder. pgmq is not packaged
# for Debian; the pgmq crate on crates.io embeds its control file and
# install script, so cargo fetches the crate from a throwaway manifest.
ensure_pgmq() {
  local extension_dir
  extension_dir="$("${PG_BIN}/pg_config" --sharedir)/extension"
  if [[ -f "${extension_dir}/pgmq--${PGMQ_VERSION}.sql" ]] &&
    grep -q "^default_version = '${PGMQ_VERSION}'" "${extension_dir}/pgmq.control"; then
    return 0
  fi

  step "Installing the pgmq ${PGMQ_VERSION} extension files from the pgmq crate ${PGMQ_CRATE_VERSION}"
  local embedded
  embedded="$(fetch_pgmq_crate)/src/install/embedded"
  grep -q "^default_version = '${PGMQ_VERSION}'" "${embedded}/pgmq.control" ||
    die "the pgmq crate ${PGMQ_CRATE_VERSION} does not embed pgmq ${PGMQ_VERSION}"
  install -m 0644 "${embedded}/pgmq.control" "${extension_dir}/pgmq.control"
  install -m 0644 "${embedded}/sql/pgmq.sql" \
    "${extension_dir}/pgmq--${PGMQ_VERSION}.sql"
}

# Fetches the pgmq crate with cargo and prints the folder of its sources.
fetch_pgmq_crate() {
  mkdir -p "${PGMQ_FETCH_DIR}/src"
  cat >"${PGMQ_FETCH_DIR}/Cargo.toml" <<EOF
# Throwaway manifest written by build.sh: it only makes cargo download the
# pgmq crate, whose sources embed the pgmq extension.
[package]
name = "pgmq-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
pgmq = { version = "=${PGMQ_CRATE_VERSION}", default-features = false }
EOF
  : >"${PGMQ_FETCH_DIR}/src/lib.rs"
  cargo fetch --quiet --manifest-path "${PGMQ_FETCH_DIR}/Cargo.toml" \
    --target x86_64-unknown-linux-gnu >&2
  local manifest
  manifest="$(cargo metadata --quiet --format-version 1 \
    --manifest-path "${PGMQ_FETCH_DIR}/Cargo.toml" |
    grep -o "\"manifest_path\":\"[^\"]*/pgmq-${PGMQ_CRATE_VERSION}/Cargo.toml\"")" ||
    die "cargo fetched no pgmq ${PGMQ_CRATE_VERSION} crate"
  manifest="${manifest#\"manifest_path\":\"}"
  dirname "${manifest%\"}"
}

# Everything every subcommand needs before it can build.
ensure_build_tools() {
  ensure_system_packages "$@"
  ensure_rust
  ensure_wasm_bindgen
  ensure_node_tools
  export DENO="${DENO_BIN}"
}
