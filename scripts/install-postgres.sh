#!/usr/bin/env bash
# Debian's PostgreSQL server for the PostgreSQL tests (slimsql.db.pgcluster starts a throwaway
# cluster from its initdb/pg_ctl/postgres; no system service is used). Installs it only where
# initdb is missing (on PATH or in /usr/lib/postgresql/*/bin, the search find_bin does) and
# apt-get can run as root; otherwise says why.
set -euo pipefail
find_initdb() {
  command -v initdb 2>/dev/null && return 0
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}
if found=$(find_initdb); then
  echo "install-postgres: PostgreSQL found ($found), nothing to install"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no initdb, and no root apt-get to install it; the PostgreSQL tests will skip" >&2
  exit 0
fi
echo "installing Debian's postgresql for the PostgreSQL tests..."
apt-get update -qq
# the package's own cluster and service are not used: the tests start their own
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "install-postgres: installed $(find_initdb)"
