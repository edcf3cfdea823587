#!/usr/bin/env bash
# Make sure the services the tests use are up: MariaDB on 127.0.0.1:3306 and
# PostgreSQL on 127.0.0.1:5432. Both are normally started before CI; start
# them if not, and wait (bounded) until they answer.
set -u

mariadb_up() { mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }
postgres_up() { pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! mariadb_up; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
if ! postgres_up; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
for _ in $(seq 1 60); do
  if mariadb_up && postgres_up; then
    echo "services: MariaDB and PostgreSQL are up"
    exit 0
  fi
  sleep 1
done
mariadb_up || echo "services: MariaDB is not reachable on 127.0.0.1:3306" >&2
postgres_up || echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2
exit 1
