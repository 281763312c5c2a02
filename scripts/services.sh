#!/usr/bin/env bash
# Makes sure the services the test suites use answer on loopback: PostgreSQL (127.0.0.1:5432)
# and Redis (127.0.0.1:6379). Starts a stopped one; fails naming the one it cannot bring up.
set -u

fail() { echo "services: $*" >&2; exit 1; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  echo "services: PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || fail "PostgreSQL at 127.0.0.1:5432 is down and could not be started (the PostgreSQL store and API suites need it)"
fi
psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1 \
  || fail "PostgreSQL at 127.0.0.1:5432 answers but refuses user postgres without a password (trust auth expected)"

if ! redis_up; then
  echo "services: Redis is not answering on 127.0.0.1:6379; starting it"
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
  redis_up || fail "Redis at 127.0.0.1:6379 is down and could not be started"
fi
echo "services: PostgreSQL and Redis are up"
