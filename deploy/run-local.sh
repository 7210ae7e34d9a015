#!/usr/bin/env bash
# The production shape on loopback, from this checkout: Debian's nginx in
# front of N Uvicorn workers, on PostgreSQL and Redis, with one shared
# warehouse. Everything it starts is its own (a redis-server on a private
# port, a PostgreSQL cluster or database of its own) and lives under
# $MAC_LOCAL_DIR, so it never touches services someone else uses.
#
#   deploy/run-local.sh start            # prints the URL; safe to run only once
#   deploy/run-local.sh stop             # stops all of it, removes its database and mount
#   deploy/run-local.sh status
#   deploy/run-local.sh env              # the state: URLs, ports, pids' files (shell syntax)
#   deploy/run-local.sh worker I start|stop|kill   # stop: SIGTERM, as a rolling restart
#   deploy/run-local.sh redis start|stop
#   deploy/run-local.sh postgres start|stop|restart   # only with its own cluster
#
# Settings (read by `start`, then kept in $MAC_LOCAL_DIR/state.env):
#   MAC_LOCAL_DIR             state, logs, data (default /tmp/mac-local)
#   MAC_LOCAL_WORKERS         Uvicorn workers (default: the number of cores)
#   MAC_LOCAL_PORT            nginx's port on 127.0.0.1 (default 8780); workers use the next ones
#   MAC_LOCAL_REDIS_PORT      its redis-server (default 6391)
#   MAC_LOCAL_PG              "own": a cluster of its own made with initdb (default), or a
#                             server URL such as postgres://root@127.0.0.1:5432 to create
#                             a database there
#   MAC_LOCAL_PG_PORT         its own cluster's port (default 5491)
#   MAC_LOCAL_DB              the database's name (default mac_local); dropped by `stop`
#   MAC_LOCAL_WAREHOUSE_SIZE  e.g. 4G: the warehouse is a loop-mounted ext4 of that size (root
#                             only), so it can be filled; default: a directory under the state
#   MAC_LOCAL_GRACE           seconds a worker may take to stop after SIGTERM (default 30)
#   MAC_MAX_UPLOAD_BYTES      the app's upload limit, and nginx's + 1 MiB (default 1 GiB)
#   any other MAC_* variable is passed to the workers.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DIR="${MAC_LOCAL_DIR:-/tmp/mac-local}"
STATE="$DIR/state.env"

log() { echo "run-local: $*" >&2; }
die() { log "$*"; exit 1; }

as_postgres() {
    # PostgreSQL refuses to run as root.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [ -n "$found" ] || die "PostgreSQL's server binaries are missing (Debian: apt-get install postgresql)"
    echo "$found"
}

wait_for() {
    # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
    local seconds="$1" what="$2" deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up in ${seconds}s"
        sleep 0.1
    done
}

# A process that has exited but was not reaped yet (a zombie) does not count.
running() { local state; state="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ "$state" != Z* ]]; }
pid_alive() { [ -f "$1" ] && running "$(cat "$1")"; }

load_state() {
    [ -f "$STATE" ] || die "nothing started under $DIR (run: $0 start)"
    # shellcheck disable=SC1090
    source "$STATE"
}

# --- configuration, fixed at start -------------------------------------------

write_state() {
    local workers="${MAC_LOCAL_WORKERS:-$(nproc)}"
    local port="${MAC_LOCAL_PORT:-8780}"
    local pg="${MAC_LOCAL_PG:-own}"
    local db="${MAC_LOCAL_DB:-mac_local}"
    local pg_port="${MAC_LOCAL_PG_PORT:-5491}"
    local redis_port="${MAC_LOCAL_REDIS_PORT:-6391}"
    local server_url
    if [ "$pg" = own ]; then
        server_url="postgres://root@127.0.0.1:$pg_port"
    else
        server_url="${pg%/}"
    fi
    {
        printf 'DIR=%q\n' "$DIR"
        printf 'WORKERS=%q\n' "$workers"
        printf 'PORT=%q\n' "$port"
        printf 'WORKER_BASE_PORT=%q\n' "$((port + 1))"
        printf 'PG_MODE=%q\n' "$([ "$pg" = own ] && echo own || echo shared)"
        printf 'PG_PORT=%q\n' "$pg_port"
        printf 'PG_SERVER_URL=%q\n' "$server_url"
        printf 'DB=%q\n' "$db"
        printf 'DATABASE_URL=%q\n' "$server_url/$db"
        printf 'REDIS_PORT=%q\n' "$redis_port"
        printf 'REDIS_URL=%q\n' "redis://127.0.0.1:$redis_port/0"
        printf 'WAREHOUSE_SIZE=%q\n' "${MAC_LOCAL_WAREHOUSE_SIZE:-}"
        printf 'GRACE=%q\n' "${MAC_LOCAL_GRACE:-30}"
        printf 'MAX_UPLOAD_BYTES=%q\n' "${MAC_MAX_UPLOAD_BYTES:-1073741824}"
        printf 'URL=%q\n' "http://127.0.0.1:$port"
        printf 'VENV=%q\n' "$ROOT/.venv"
        # Every other MAC_* variable of the caller's, for the workers.
        local name
        for name in $(compgen -e | grep '^MAC_' | grep -v '^MAC_LOCAL_' || true); do
            printf 'export %s=%q\n' "$name" "${!name}"
        done
    } >"$STATE"
}

# The warehouse: a loop-mounted filesystem when a size is given (so a fault
# test can fill it), else a directory.
warehouse_mount() { echo "$DIR/wh"; }
warehouse_dir() {
    if [ -n "$WAREHOUSE_SIZE" ]; then echo "$(warehouse_mount)/WareHouse"; else echo "$DIR/WareHouse"; fi
}

app_env() {
    export DJANGO_SETTINGS_MODULE=macproject.settings
    export DATABASE_URL REDIS_URL
    export MAC_WAREHOUSE_DIR="$(warehouse_dir)"
    export MAC_MAX_UPLOAD_BYTES="$MAX_UPLOAD_BYTES"
    export MAC_SECRET_KEY="$(cat "$DIR/secret-key")"
    export MAC_SENDFILE_HEADER=X-Accel-Redirect
    export MAC_SENDFILE_ROOT=/_warehouse/
    export MAC_SERVE_STATIC=0
    export MAC_ALLOWED_HOSTS="${MAC_ALLOWED_HOSTS:-127.0.0.1,localhost}"
    export MAC_LOG_LEVEL="${MAC_LOG_LEVEL:-WARNING}"
    # The production shape: every worker reconciles what a crash left when it starts.
    export MAC_RECONCILE_AT_START=1
    export PYTHONUNBUFFERED=1
}

# --- PostgreSQL ---------------------------------------------------------------

postgres_start() {
    if [ "$PG_MODE" != own ]; then return; fi
    local bin data="$DIR/pg"
    bin="$(pg_bin)"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres: "$data"
        as_postgres "$bin/initdb" -D "$data" -U root -A trust --no-sync -E UTF8 >"$DIR/log/initdb.log"
    fi
    if as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
    touch "$DIR/log/postgres.log"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR/log/postgres.log"
    # Sized for a soak: every worker holds a connection per busy thread.
    as_postgres "$bin/pg_ctl" -D "$data" -l "$DIR/log/postgres.log" -w -t 60 start -o \
        "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data \
         -c max_connections=300 -c shared_buffers=64MB" >/dev/null
}

postgres_stop() {
    if [ "$PG_MODE" != own ] || [ ! -f "$DIR/pg/PG_VERSION" ]; then return; fi
    as_postgres "$(pg_bin)/pg_ctl" -D "$DIR/pg" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

postgres_restart() {
    [ "$PG_MODE" = own ] || die "postgres restart needs its own cluster (MAC_LOCAL_PG=own)"
    as_postgres "$(pg_bin)/pg_ctl" -D "$DIR/pg" -l "$DIR/log/postgres.log" -m fast -w -t 60 restart >/dev/null
}

database_create() {
    psql "$PG_SERVER_URL/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$DB\"" >/dev/null ||
        die "could not create database $DB on $PG_SERVER_URL (does it exist? pick MAC_LOCAL_DB)"
    echo created >"$DIR/run/database"
}

database_drop() {
    [ -f "$DIR/run/database" ] || return 0
    psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -f "$DIR/run/database"
}

# --- Redis ----------------------------------------------------------------------

redis_start() {
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$DIR/run/redis.pid" --logfile "$DIR/log/redis.log" \
        --dir "$DIR/run"
    wait_for 20 "redis-server on port $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping
}

redis_stop() {
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 20))
    while pid_alive "$DIR/run/redis.pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
}

# --- workers --------------------------------------------------------------------

worker_port() { echo $((WORKER_BASE_PORT + $1 - 1)); }

worker_start() {
    local i="$1" port pidfile="$DIR/run/worker-$1.pid"
    port="$(worker_port "$i")"
    if pid_alive "$pidfile"; then return; fi
    (
        app_env
        cd "$ROOT"
        # Uvicorn's own grace outlasts the app's drain (MAC_SHUTDOWN_GRACE), so
        # the app closes its streams itself and Uvicorn is the backstop.
        exec setsid "$VENV/bin/python" -m uvicorn macproject.asgi:application \
            --host 127.0.0.1 --port "$port" --lifespan off --no-access-log \
            --backlog 2048 --timeout-graceful-shutdown "$GRACE" \
            >>"$DIR/log/worker-$i.log" 2>&1 </dev/null
    ) &
    echo $! >"$pidfile"
    if ! (wait_for 60 "worker $i on port $port" \
        bash -c "state=\$(ps -o stat= -p $(cat "$pidfile")) && [ \"\$state\" != Z ] && curl -fs -o /dev/null http://127.0.0.1:$port/api/limits"); then
        tail -n 20 "$DIR/log/worker-$i.log" >&2
        exit 1
    fi
}

worker_stop() {
    # SIGTERM, as systemd's stop does, then SIGKILL after the grace (TimeoutStopSec).
    local pidfile="$DIR/run/worker-$1.pid" pid deadline
    pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    deadline=$((SECONDS + GRACE + 5))
    while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if running "$pid"; then
        log "worker $1 (pid $pid) still running $((GRACE + 5))s after SIGTERM: killed"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

worker_kill() {
    local pidfile="$DIR/run/worker-$1.pid"
    pid_alive "$pidfile" && kill -KILL "$(cat "$pidfile")"
    rm -f "$pidfile"
}

# --- nginx ----------------------------------------------------------------------

nginx_bin() {
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        [ "$(id -u)" = 0 ] || die "nginx is missing (Debian: apt-get install nginx)"
        log "installing nginx ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    fi
    command -v nginx 2>/dev/null || echo /usr/sbin/nginx
}

nginx_render() {
    # $1: a worker left out (a rolling restart takes it out of nginx first).
    local conf="$DIR/nginx" workers="" i
    for i in $(seq "$WORKERS"); do
        [ "$i" = "${1:-}" ] || workers+="127.0.0.1:$(worker_port "$i") "
    done
    MAC_WORKERS="$workers" MAC_WAREHOUSE_DIR="$(warehouse_dir)" \
        MAC_MAX_UPLOAD_BYTES="$MAX_UPLOAD_BYTES" MAC_STATIC_ROOT="$ROOT/build/static" \
        MAC_NGINX_LISTEN="127.0.0.1:$PORT" MAC_NGINX_SERVER_NAME=localhost \
        MAC_NGINX_ACCESS_LOG="$DIR/log/nginx-access.log" \
        "$HERE/render-nginx.sh" >"$conf/mac.conf"
}

nginx_reload() {
    # Graceful: new requests go by the new configuration, those in flight finish.
    nginx_render "${1:-}"
    "$(nginx_bin)" -e "$DIR/log/nginx-error.log" -c "$DIR/nginx/nginx.conf" -s reload
}

nginx_start() {
    local conf="$DIR/nginx"
    mkdir -p "$conf/temp"
    nginx_render
    cat >"$conf/nginx.conf" <<EOF
# Generated by deploy/run-local.sh: a private nginx on loopback.
worker_processes 2;
worker_rlimit_nofile 65536;
pid $DIR/run/nginx.pid;
error_log $DIR/log/nginx-error.log warn;
events { worker_connections 8192; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    client_body_temp_path $conf/temp/body;
    proxy_temp_path $conf/temp/proxy;
    fastcgi_temp_path $conf/temp/fastcgi;
    uwsgi_temp_path $conf/temp/uwsgi;
    scgi_temp_path $conf/temp/scgi;
    include $conf/mac.conf;
}
EOF
    local nginx
    nginx="$(nginx_bin)"
    "$nginx" -t -q -e "$DIR/log/nginx-error.log" -c "$conf/nginx.conf"
    "$nginx" -e "$DIR/log/nginx-error.log" -c "$conf/nginx.conf"
    wait_for 20 "nginx on port $PORT" curl -fs -o /dev/null "http://127.0.0.1:$PORT/api/limits"
}

nginx_stop() {
    pid_alive "$DIR/run/nginx.pid" || return 0
    local pid deadline
    pid="$(cat "$DIR/run/nginx.pid")"
    kill -QUIT "$pid"  # graceful: finish what is in flight
    deadline=$((SECONDS + 15))
    while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    running "$pid" && kill -TERM "$pid"
    return 0
}

# --- the whole -------------------------------------------------------------------

start() {
    if [ -f "$STATE" ]; then
        die "$DIR already holds a deployment: run '$0 stop' first"
    fi
    mkdir -p "$DIR/run" "$DIR/log"
    chmod 755 "$DIR"
    write_state
    load_state
    trap 'status=$?; if [ "$status" != 0 ]; then log "start failed; stopping what was started"; stop_all; fi' EXIT
    # The checkout's .venv, made or brought up to date with pyproject.toml.
    (source "$ROOT/scripts/_bootstrap.sh" && bootstrap) >&2
    command -v redis-server >/dev/null || die "redis-server is missing (Debian: apt-get install redis-server)"
    nginx_bin >/dev/null
    [ -f "$DIR/secret-key" ] || "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$DIR/secret-key"
    chmod 600 "$DIR/secret-key"

    if [ -n "$WAREHOUSE_SIZE" ]; then
        [ "$(id -u)" = 0 ] || die "MAC_LOCAL_WAREHOUSE_SIZE needs root (a loop mount)"
        truncate -s "$WAREHOUSE_SIZE" "$DIR/warehouse.img"
        mkfs.ext4 -q -F -m 0 "$DIR/warehouse.img"
        mkdir -p "$(warehouse_mount)"
        mount -o loop "$DIR/warehouse.img" "$(warehouse_mount)"
    fi
    mkdir -p "$(warehouse_dir)"

    postgres_start
    database_create
    redis_start
    (
        app_env
        cd "$ROOT"
        "$VENV/bin/python" manage.py migrate --noinput -v0
        "$VENV/bin/python" manage.py collectstatic --noinput -v0
        "$VENV/bin/python" manage.py recover_runs -v0
    )
    local i
    for i in $(seq "$WORKERS"); do worker_start "$i"; done
    nginx_start
    trap - EXIT
    log "$WORKERS workers behind nginx on $URL (state: $STATE)"
    echo "$URL"
}

stop_all() {
    # Each step tolerates what is already stopped, so a half-started deployment stops too.
    set +e
    nginx_stop
    local pidfile
    for pidfile in "$DIR"/run/worker-*.pid; do
        [ -e "$pidfile" ] || continue
        local i="${pidfile##*/worker-}"
        worker_stop "${i%.pid}"
    done
    redis_stop
    database_drop
    postgres_stop
    if mountpoint -q "$(warehouse_mount)" 2>/dev/null; then
        umount "$(warehouse_mount)" || umount -l "$(warehouse_mount)"
    fi
    rm -rf "$DIR"
    set -e
}

stop() {
    [ -f "$STATE" ] || { log "nothing to stop under $DIR"; return 0; }
    load_state
    stop_all
    log "stopped; $DIR removed"
}

status() {
    load_state
    local i
    pid_alive "$DIR/run/nginx.pid" && echo "nginx       up    $URL" || echo "nginx       down"
    for i in $(seq "$WORKERS"); do
        pid_alive "$DIR/run/worker-$i.pid" && echo "worker $i    up    pid $(cat "$DIR/run/worker-$i.pid"), port $(worker_port "$i")" ||
            echo "worker $i    down"
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && echo "redis       up    $REDIS_URL" || echo "redis       down"
    pg_isready -q -d "$DATABASE_URL" && echo "postgresql  up    $DATABASE_URL" || echo "postgresql  down"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) load_state; cat "$STATE"; echo "WAREHOUSE=$(warehouse_dir)" ;;
    worker)
        load_state
        [ -n "${2:-}" ] && [ "$2" -ge 1 ] && [ "$2" -le "$WORKERS" ] || die "worker 1..$WORKERS"
        case "${3:-}" in
            start) worker_start "$2" ;;
            stop) worker_stop "$2" ;;
            kill) worker_kill "$2" ;;
            # A rolling restart: out of nginx first, so no request is sent to a worker
            # that is stopping; back in once its replacement is up.
            drain) nginx_reload "$2" ;;
            undrain) nginx_reload ;;
            *) die "worker I start|stop|kill|drain|undrain" ;;
        esac ;;
    redis)
        load_state
        case "${2:-}" in start) redis_start ;; stop) redis_stop ;; *) die "redis start|stop" ;; esac ;;
    postgres)
        load_state
        case "${2:-}" in
            start) postgres_start ;;
            stop) postgres_stop ;;
            restart) postgres_restart ;;
            *) die "postgres start|stop|restart" ;;
        esac ;;
    *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
