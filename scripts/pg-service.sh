#!/usr/bin/env bash
# A throw-away PostgreSQL on loopback for tests, benchmarks and development:
# one cluster under $PG_DIR (data, socket, log), listening on 127.0.0.1:$PG_PORT
# only, with a superuser `ferry` (trust authentication on loopback: nothing here
# may be reachable from elsewhere) and a database `ferry`.
# Nothing is read from or written to /etc/postgresql or /var/lib/postgresql.
#
# Usage: scripts/pg-service.sh check | start | stop [--purge] | status
#   check   exit 0 if the PostgreSQL server binaries are installed, else print the apt-get line and exit 3
#   start   initialise a fresh cluster (wipes $PG_DIR/data), start it, print the URL
#           (also written to $PG_DIR/url)
#   stop    stop the server recorded in $PG_DIR/data/postmaster.pid (only if it is ours);
#           --purge also removes $PG_DIR
#   status  exit 0 if the server accepts connections
#
# Packages (Debian 12): apt-get install -y --no-install-recommends postgresql
#
# initdb and postgres refuse to run as root: as root, the cluster runs as the
# `postgres` user (created by the Debian package) and $PG_DIR is chowned to it.
#
# Environment (all optional):
#   PG_DIR    state directory      default /tmp/ferry-pg
#   PG_PORT   TCP port             default 15432
#   PG_BIN    server binaries      default the newest /usr/lib/postgresql/<ver>/bin
#   PG_FSYNC  on | off             default off (tests: a crash only loses throw-away data);
#                                  benchmarks set on, to compare with SQLite's fsync'd commits
set -euo pipefail

PG_DIR=${PG_DIR:-/tmp/ferry-pg}
PG_PORT=${PG_PORT:-15432}
PG_FSYNC=${PG_FSYNC:-off}
case "$PG_FSYNC" in on | off) ;; *) echo "PG_FSYNC must be on or off" >&2; exit 2 ;; esac
APT_LINE="apt-get install -y --no-install-recommends postgresql"

log() { printf '[pg-service] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  echo "$dir"
}

check() {
  local bin
  bin=$(find_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ] || [ ! -x "$bin/postgres" ]; then
    echo "PostgreSQL server binaries not found; install with: $APT_LINE" >&2
    return 3
  fi
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (created by the postgresql package)"
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgres://ferry@127.0.0.1:$PG_PORT/ferry"; }

status() {
  local bin
  bin=$(find_bin)
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1
}

# Is $1 a live postgres whose data directory is ours? (A pid file alone is not enough.)
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$PG_DIR/data"; }

stop() {
  local pidfile="$PG_DIR/data/postmaster.pid" pid
  if [ -f "$pidfile" ]; then
    pid=$(head -1 "$pidfile")
    if [ -n "$pid" ] && ours "$pid"; then
      # SIGINT: "fast" shutdown (disconnect clients, no checkpoint wait beyond what is needed).
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
      done
      if [ -d "/proc/$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  if [ "${1:-}" = "--purge" ]; then
    rm -rf "$PG_DIR"
  fi
}

start() {
  check || exit 3
  local bin
  bin=$(find_bin)
  stop
  mkdir -p "$PG_DIR"
  rm -rf "$PG_DIR/data" "$PG_DIR/socket"
  mkdir -p "$PG_DIR/data" "$PG_DIR/socket"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_DIR" "$PG_DIR/data" "$PG_DIR/socket"
    # The parents must let `postgres` reach the directory (mktemp -d makes it 0700).
    chmod 0755 "$PG_DIR"
  fi
  as_owner "$bin/initdb" -D "$PG_DIR/data" -U ferry --auth=trust --encoding=UTF8 --locale=C.UTF-8 -N >"$PG_DIR/initdb.log" 2>&1 ||
    { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  # Loopback only; fsync as PG_FSYNC says.
  cat >>"$PG_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR/socket'
max_connections = 300
fsync = $PG_FSYNC
synchronous_commit = $PG_FSYNC
full_page_writes = $PG_FSYNC
shared_buffers = 128MB
EOF
  as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/data/server.log" -w -t 60 start >/dev/null ||
    { tail -20 "$PG_DIR/data/server.log" >&2 || true; die "postgres did not start"; }
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ferry ferry
  url >"$PG_DIR/url"
  url
}

case "${1:-}" in
  check) check ;;
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *) echo "usage: $0 check | start | stop [--purge] | status" >&2; exit 2 ;;
esac
