#!/usr/bin/env bash
# finsync's one test command, for people and for CI:
#
#     scripts/test.sh [extra `cargo test` arguments]
#
# The integration tests need PostgreSQL and Redis. If FINSYNC_TEST_DATABASE_URL /
# FINSYNC_TEST_REDIS_URL are set, those servers are used as they are. Otherwise this
# script makes sure a PostgreSQL server answers on 127.0.0.1:5432 and a Redis server
# on 127.0.0.1:6379, installing them from Debian's packages and starting them when
# needed (with sudo when not run as root), and then runs the whole suite with
# `cargo test --workspace --all-targets`. The tests create and drop their own
# databases and use their own Redis key prefixes. The API contract test also needs
# schemathesis, which is installed from PyPI into a venv under ~/.cache (or
# FINSYNC_SCHEMATHESIS names one you have), and the OAuth interop test needs Node.js
# (from Debian's packages when missing) and the npm packages pinned in
# tests/interop, installed under ~/.cache (or FINSYNC_INTEROP_NODE_MODULES names
# a node_modules that has them). The UK Open Banking contract test runs Stoplight
# Prism, pinned in tests/contracts, installed the same way under ~/.cache (or
# FINSYNC_CONTRACTS_NODE_MODULES names a node_modules that has it). The browser test
# drives Debian's chromium (installed when missing) with playwright-core, pinned in
# tests/browser and installed the same way (or FINSYNC_BROWSER_NODE_MODULES); its
# screenshots are kept under <target>/tmp/test-artifacts. The alert rules are
# checked with promtool, from Debian's prometheus package (installed when missing).
# The sync benchmark's test starts a redis-server of
# its own, and the fault suite (tests/it/faults.rs) a redis-server and a PostgreSQL
# server of its own: the programs are installed from Debian's packages when missing.
# The fault suite's full run: FINSYNC_FAULT_SUITE=full scripts/test.sh faults::
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DEFAULT_URL="postgres://postgres@${PG_HOST}:${PG_PORT}/postgres"
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
REDIS_DEFAULT_URL="redis://${REDIS_HOST}:${REDIS_PORT}"
WAIT_SECS=30

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed; run it as root, or set FINSYNC_TEST_DATABASE_URL and FINSYNC_TEST_REDIS_URL to servers you already have"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install $* yourself, or set FINSYNC_TEST_DATABASE_URL and FINSYNC_TEST_REDIS_URL"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        as_root apt-get update -q || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "installing Debian package(s): $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
        die "could not install $*"
}

# True when something accepts TCP connections on $1:$2 (bash's /dev/tcp, 2 s timeout).
tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# ---------------------------------------------------------------- PostgreSQL

# 0: accepting connections; 1: answering but not ready (e.g. starting); 2: nothing.
pg_state() {
    if command -v pg_isready >/dev/null 2>&1; then
        local rc=0
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3 || rc=$?
        case $rc in
        0) return 0 ;;
        1) return 1 ;;
        *) return 2 ;;
        esac
    fi
    tcp_open "$PG_HOST" "$PG_PORT" && return 0
    return 2
}

pg_wait() {
    local i
    for ((i = 0; i < WAIT_SECS; i++)); do
        pg_state && return 0
        sleep 1
    done
    return 1
}

# The newest installed PostgreSQL server version (Debian layout), or nothing.
pg_installed_version() {
    local bin
    bin=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
    [[ -n $bin ]] || return 0
    bin=${bin#/usr/lib/postgresql/}
    printf '%s\n' "${bin%%/*}"
}

# Set by pg_start_local: the cluster this script installed, created or started
# ("VERSION NAME"); empty for a server someone else runs.
PG_OWNED_CLUSTER=""

pg_start_local() {
    local version installed=0
    version=$(pg_installed_version)
    if [[ -z $version ]]; then
        installed=1
        note "no PostgreSQL server is installed"
        apt_install postgresql
        version=$(pg_installed_version)
        [[ -n $version ]] || die "installed the postgresql package but found no server under /usr/lib/postgresql/*/bin/postgres"
    fi
    if ! command -v pg_lsclusters >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        die "PostgreSQL ${version} is installed but pg_lsclusters/pg_ctlcluster (Debian's postgresql-common) are missing: start a server on ${PG_HOST}:${PG_PORT} yourself, or set FINSYNC_TEST_DATABASE_URL"
    fi

    # A cluster configured for our port, any version; else create one for the newest
    # installed version.
    local line cver cname cport cstatus
    local cluster_version="" cluster_name="" cluster_status=""
    while read -r cver cname cport cstatus _; do
        if [[ $cport == "$PG_PORT" ]]; then
            cluster_version=$cver cluster_name=$cname cluster_status=$cstatus
            break
        fi
    done < <(pg_lsclusters -h 2>/dev/null || true)

    if [[ -z $cluster_name ]]; then
        cluster_version=$version
        cluster_name=main
        line=$(pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main"' || true)
        [[ -z $line ]] || cluster_name=finsync
        say "creating PostgreSQL cluster ${cluster_version}/${cluster_name} on port ${PG_PORT}"
        as_root pg_createcluster --port "$PG_PORT" "$cluster_version" "$cluster_name" ||
            die "pg_createcluster ${cluster_version} ${cluster_name} failed"
        cluster_status=down
    fi

    if [[ $cluster_status == online* ]]; then
        note "cluster ${cluster_version}/${cluster_name} is already running; waiting for it"
        # Ours only if this script just installed it (the package starts its cluster).
        [[ $installed -eq 0 ]] || PG_OWNED_CLUSTER="$cluster_version $cluster_name"
        return 0
    fi
    say "starting PostgreSQL cluster ${cluster_version}/${cluster_name}"
    as_root pg_ctlcluster --skip-systemctl-redirect "$cluster_version" "$cluster_name" start ||
        die "could not start PostgreSQL cluster ${cluster_version}/${cluster_name}; see /var/log/postgresql/postgresql-${cluster_version}-${cluster_name}.log"
    PG_OWNED_CLUSTER="$cluster_version $cluster_name"
}

# Tests connect as `postgres` over TCP without a password. On a cluster that this
# script started or created, a refusal is fixed by trusting 127.0.0.1 in its
# pg_hba.conf; a server someone else runs is never changed.
pg_check_auth() {
    if ! command -v psql >/dev/null 2>&1; then
        note "psql not found: cannot check that user postgres may log in without a password"
        return 0
    fi
    local err
    if err=$(PGCONNECT_TIMEOUT=5 psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' 2>&1 >/dev/null); then
        note "user postgres can connect over TCP without a password"
        return 0
    fi
    if ! grep -qiE 'password|authentication|pg_hba' <<<"$err"; then
        die "PostgreSQL on ${PG_HOST}:${PG_PORT} answers but 'psql -h ${PG_HOST} -U postgres' fails: ${err}
       Fix that server, or set FINSYNC_TEST_DATABASE_URL to a database URL the tests can use."
    fi
    if [[ -z $PG_OWNED_CLUSTER ]]; then
        die "PostgreSQL on ${PG_HOST}:${PG_PORT} refuses user postgres without a password: ${err}
       This script does not change a server it did not start. Either allow it (a line
       'host all all 127.0.0.1/32 trust' at the top of its pg_hba.conf, then reload), or set
       FINSYNC_TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/postgres (a user that may create databases)."
    fi
    local version name hba
    read -r version name <<<"$PG_OWNED_CLUSTER"
    hba=$(pg_conftool -s "$version" "$name" show hba_file 2>/dev/null || true)
    [[ -n $hba ]] || hba="/etc/postgresql/${version}/${name}/pg_hba.conf"
    say "NOTE: cluster ${version}/${name} (started by this script) refused user postgres over TCP;"
    note "adding 'host all all 127.0.0.1/32 trust' to the top of ${hba} and reloading."
    note "Any local user can now log in to this cluster as any role over 127.0.0.1."
    as_root sed -i '1i host    all    all    127.0.0.1/32    trust    # added by finsync scripts/test.sh' "$hba" ||
        die "could not edit ${hba}"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload ||
        die "could not reload PostgreSQL cluster ${version}/${name}"
    sleep 1
    err=$(PGCONNECT_TIMEOUT=5 psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' 2>&1 >/dev/null) ||
        die "user postgres still cannot connect after the pg_hba.conf change: ${err}"
    note "user postgres can now connect over TCP without a password"
}

ensure_postgres() {
    if [[ -n ${FINSYNC_TEST_DATABASE_URL:-} ]]; then
        say "PostgreSQL: using FINSYNC_TEST_DATABASE_URL as given"
        return 0
    fi
    say "checking PostgreSQL on ${PG_HOST}:${PG_PORT}…"
    local state=0
    pg_state || state=$?
    case $state in
    0) note "PostgreSQL is up" ;;
    1)
        note "PostgreSQL answers but is not accepting connections yet; waiting up to ${WAIT_SECS} s"
        pg_wait || die "PostgreSQL on ${PG_HOST}:${PG_PORT} did not become ready within ${WAIT_SECS} s"
        ;;
    *)
        note "nothing answers on ${PG_HOST}:${PG_PORT}"
        pg_start_local
        say "waiting for PostgreSQL (up to ${WAIT_SECS} s)…"
        pg_wait || die "PostgreSQL did not answer on ${PG_HOST}:${PG_PORT} within ${WAIT_SECS} s (cluster ${PG_OWNED_CLUSTER}; see /var/log/postgresql/)"
        note "PostgreSQL is up"
        ;;
    esac
    pg_check_auth
    export FINSYNC_TEST_DATABASE_URL="$PG_DEFAULT_URL"
}

# --------------------------------------------------------------------- Redis

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
        return
    fi
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r reply <&3 && [[ $reply == +PONG* ]]' \
        _ "$REDIS_HOST" "$REDIS_PORT" >/dev/null 2>&1
}

redis_wait() {
    local i
    for ((i = 0; i < WAIT_SECS; i++)); do
        redis_ping && return 0
        sleep 1
    done
    return 1
}

ensure_redis() {
    if [[ -n ${FINSYNC_TEST_REDIS_URL:-} ]]; then
        say "Redis: using FINSYNC_TEST_REDIS_URL as given"
        return 0
    fi
    say "checking Redis on ${REDIS_HOST}:${REDIS_PORT}…"
    if redis_ping; then
        note "Redis is up"
    else
        if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
            die "something listens on ${REDIS_HOST}:${REDIS_PORT} but does not answer PING with PONG (a Redis with a password?); set FINSYNC_TEST_REDIS_URL to a Redis the tests can use"
        fi
        note "nothing answers on ${REDIS_HOST}:${REDIS_PORT}"
        if ! command -v redis-server >/dev/null 2>&1; then
            apt_install redis-server
        fi
        # Installing the package may have started its own service.
        if ! redis_ping; then
            local log="${TMPDIR:-/tmp}/finsync-test-redis.log"
            say "starting redis-server (no persistence; log: ${log})"
            redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
                --save "" --appendonly no --dir "${TMPDIR:-/tmp}" --logfile "$log" ||
                die "redis-server failed to start; see ${log}"
        fi
        say "waiting for Redis (up to ${WAIT_SECS} s)…"
        redis_wait || die "Redis did not answer PING on ${REDIS_HOST}:${REDIS_PORT} within ${WAIT_SECS} s; see ${TMPDIR:-/tmp}/finsync-test-redis.log"
        note "Redis is up"
    fi
    export FINSYNC_TEST_REDIS_URL="$REDIS_DEFAULT_URL"
}

# The sync benchmark's test and the fault suite start a redis-server of their own,
# whichever Redis the other tests use; the fault suite also runs a PostgreSQL server
# of its own (initdb, pg_ctl), which it stops and restarts.
ensure_server_binaries() {
    if ! command -v redis-server >/dev/null 2>&1; then
        note "the benchmark test and the fault suite need the redis-server binary"
        apt_install redis-server
    fi
    if ! command -v initdb >/dev/null 2>&1 && [[ -z $(pg_installed_version) ]]; then
        note "the fault suite needs PostgreSQL's server programs"
        apt_install postgresql
    fi
}

# ------------------------------------------------------------- schemathesis

# The contract test fuzzes the API with schemathesis (PyPI), kept in a venv outside
# the clone so reruns reuse it. Its version is pinned in scripts/requirements-test.txt.
ensure_schemathesis() {
    if [[ -n ${FINSYNC_SCHEMATHESIS:-} ]]; then
        say "schemathesis: using FINSYNC_SCHEMATHESIS as given"
        return 0
    fi
    local tools="${FINSYNC_TOOLS_DIR:-${HOME:-/tmp}/.cache/finsync-tools}"
    local venv="${tools}/venv" requirements="scripts/requirements-test.txt"
    local stamp="${venv}/.requirements"
    if [[ -x ${venv}/bin/schemathesis ]] && cmp -s "$requirements" "$stamp"; then
        note "schemathesis is installed in ${venv}"
    else
        say "installing Python test tools into ${venv}"
        if ! command -v python3 >/dev/null 2>&1; then
            apt_install python3 python3-venv
        elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        mkdir -p "$tools"
        python3 -m venv "$venv" || die "could not create a Python venv in ${venv}"
        "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" ||
            die "could not install ${requirements} from PyPI"
        cp "$requirements" "$stamp"
    fi
    export FINSYNC_SCHEMATHESIS="${venv}/bin/schemathesis"
}

# ------------------------------------------------------------- npm packages

# Installs the npm packages pinned by tests/<dir>/package-lock.json into
# ~/.cache/finsync-tools/<dir> (outside the clone; again only when the lock
# changes), unless the variable <env> already names a node_modules that has them,
# and exports <env>. <marker> is a file that exists once they are installed.
ensure_npm_packages() {
    local dir_name=$1 env=$2 marker=$3 what=$4
    if [[ -n ${!env:-} ]]; then
        say "${what}: using ${env} as given"
        return 0
    fi
    local tools="${FINSYNC_TOOLS_DIR:-${HOME:-/tmp}/.cache/finsync-tools}"
    local dir="${tools}/${dir_name}" lock="tests/${dir_name}/package-lock.json"
    local stamp="${dir}/.installed-lock"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    if [[ -e ${dir}/node_modules/${marker} ]] && cmp -s "$lock" "$stamp"; then
        note "${what} is installed in ${dir}"
    else
        say "installing tests/${dir_name}'s npm packages (${what}) into ${dir}"
        mkdir -p "$dir"
        cp "tests/${dir_name}/package.json" "tests/${dir_name}/.npmrc" "$lock" "$dir/"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
            die "could not install ${lock} from the npm registry"
        cp "$lock" "$stamp"
    fi
    export "${env}=${dir}/node_modules"
}

# The OAuth interop test runs a third-party authorization server, the npm package
# oauth2-mock-server; the test runs tests/interop/institution.js with NODE_PATH
# pointing at its node_modules.
ensure_oauth2_mock_server() {
    ensure_npm_packages interop FINSYNC_INTEROP_NODE_MODULES oauth2-mock-server/package.json oauth2-mock-server
}

# The UK Open Banking contract test (tests/it/standards.rs) puts Stoplight Prism, the
# npm package @stoplight/prism-cli, in validating-proxy mode between finsync and the
# sandbox's Albion.
ensure_prism() {
    ensure_npm_packages contracts FINSYNC_CONTRACTS_NODE_MODULES .bin/prism Prism
}

# The browser tests (tests/it/browser.rs, tests/it/status_page.rs) drive Debian's
# chromium with the npm package playwright-core (which uses that chromium, never a
# download of its own).
ensure_browser() {
    if ! command -v chromium >/dev/null 2>&1 && [[ -z ${FINSYNC_CHROMIUM:-} ]]; then
        note "chromium is not installed"
        apt_install chromium
    fi
    ensure_npm_packages browser FINSYNC_BROWSER_NODE_MODULES playwright-core/package.json playwright-core
}

# ----------------------------------------------------------------- promtool

# The alert rules under deploy/prometheus are checked and unit-tested with
# promtool, from Debian's prometheus package.
ensure_promtool() {
    if [[ -n ${FINSYNC_PROMTOOL:-} ]] || command -v promtool >/dev/null 2>&1; then
        note "promtool is installed"
        return 0
    fi
    note "promtool is not installed"
    apt_install prometheus
}

# -------------------------------------------------------------- build tools

# The `finsync` binary's allocator, jemalloc, is built from C with `make` (a C
# compiler is there already: Rust links with it on Linux).
ensure_build_tools() {
    command -v make >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "make not found: install it (jemalloc, the binaries' allocator, is built with it)"
    apt_install make
}

# ---------------------------------------------------------------------- main

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
    ensure_build_tools
    ensure_postgres
    ensure_redis
    ensure_server_binaries
    ensure_schemathesis
    ensure_oauth2_mock_server
    ensure_prism
    ensure_browser
    ensure_promtool
    say "running the test suite: cargo test --workspace --all-targets${*:+ $*}"
    note "target directory: ${CARGO_TARGET_DIR:-$(pwd)/target}"
    cargo test --workspace --all-targets "$@"
}

# Sourcing this file only defines the functions (used to check the service setup on
# its own); running it runs everything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
