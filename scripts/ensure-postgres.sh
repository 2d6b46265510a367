#!/bin/sh
# Makes sure the PostgreSQL server binaries are on this machine for the test suite, which runs
# every database test against SQLite and against a throwaway PostgreSQL cluster of its own
# (tests/pg.py: initdb in a temp dir, 127.0.0.1 only, a free port, stopped at the end).
#
# Nothing to do when the binaries are there (Debian: /usr/lib/postgresql/<version>/bin), when
# POSTGRES_TEST_URL names a server to use instead, or when SKIP_POSTGRES_TESTS=1 (SQLite only).
# Otherwise, as root on Debian/Ubuntu, installs Debian's `postgresql` package non-interactively,
# telling postgresql-common not to create (or start) its default cluster on port 5432: the
# tests make their own. Anyone else gets a message saying what to do, and `make test` stops.
set -eu

if [ -n "${POSTGRES_TEST_URL:-}" ] || [ "${SKIP_POSTGRES_TESTS:-}" = "1" ]; then
    exit 0
fi
have_binaries() {
    [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ] && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
    command -v initdb >/dev/null 2>&1
}
if have_binaries; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server not found; installing Debian's postgresql package" >&2
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/50-no-main-cluster.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >/dev/null
    if have_binaries; then
        exit 0
    fi
    echo "ensure-postgres: installed postgresql but found no initdb under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-postgres: the tests need a PostgreSQL server and none is installed.
  Install it (Debian/Ubuntu: sudo apt-get install postgresql; or set PG_BIN to a bin/ with initdb),
  or point the tests at a server: POSTGRES_TEST_URL=postgresql+psycopg://user:pw@host:port/postgres
  (a role that may CREATE DATABASE), or run SQLite only: SKIP_POSTGRES_TESTS=1 make test
MSG
exit 1
