#!/usr/bin/env bash
# System packages the Python dependencies build against: mysqlclient (the C
# MySQL driver) needs the MariaDB client headers and pkg-config. Installed from
# Debian's packages when missing (as root, as on CI); otherwise says what to install.
set -eu
if pkg-config --exists libmariadb 2>/dev/null || command -v mariadb_config >/dev/null 2>&1 \
   || command -v mysql_config >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing libmariadb-dev and pkg-config (for mysqlclient)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null
else
  echo "system-deps: please install the MariaDB client headers and pkg-config" >&2
  echo "  (Debian/Ubuntu: apt-get install libmariadb-dev pkg-config; macOS: brew install mariadb-connector-c pkg-config)" >&2
  exit 1
fi
