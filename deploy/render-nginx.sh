#!/usr/bin/env bash
# Print deploy/nginx/mac.conf.in with its placeholders filled, for an
# `http {}` block (e.g. /etc/nginx/conf.d/mac.conf). Reads:
#   MAC_WORKERS            the workers, "127.0.0.1:8001 127.0.0.1:8002 ..." (required)
#   MAC_WAREHOUSE_DIR      the warehouse, as nginx sees it (required)
#   MAC_MAX_UPLOAD_BYTES   the app's upload limit; nginx allows 1 MiB more (unset: no limit)
#   MAC_STATIC_ROOT        where collectstatic put the assets (default: ./build/static)
#   MAC_NGINX_LISTEN       the listen directive's arguments (default 80)
#   MAC_NGINX_SERVER_NAME  (default _)
#   MAC_NGINX_ACCESS_LOG   a path, or "off" (default /var/log/nginx/mac.access.log)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${MAC_WORKERS:?MAC_WORKERS: the workers, e.g. '127.0.0.1:8001 127.0.0.1:8002'}"
: "${MAC_WAREHOUSE_DIR:?MAC_WAREHOUSE_DIR: the warehouse directory}"

if [ -n "${MAC_MAX_UPLOAD_BYTES:-}" ]; then
    # The multipart framing around the file: the app allows 1 MiB of it too.
    body_limit=$((MAC_MAX_UPLOAD_BYTES + 1048576))
else
    body_limit=0  # no limit: the app's quotas are what holds
fi

servers=""
for worker in $MAC_WORKERS; do
    # max_fails=1: a worker that refused a connection is skipped for 2 s
    # instead of being tried again by every request meanwhile.
    servers+="    server ${worker} max_fails=1 fail_timeout=2s;"$'\n'
done

warehouse="$(realpath -m "$MAC_WAREHOUSE_DIR")"
static_root="$(realpath -m "${MAC_STATIC_ROOT:-$here/../build/static}")"

# Bash substitution, not sed: paths may hold any character sed treats specially.
template="$(cat "$here/nginx/mac.conf.in")"
template="${template//@UPSTREAM_SERVERS@/${servers%$'\n'}}"
template="${template//@LISTEN@/${MAC_NGINX_LISTEN:-80}}"
template="${template//@SERVER_NAME@/${MAC_NGINX_SERVER_NAME:-_}}"
template="${template//@UPLOAD_BODY_LIMIT@/$body_limit}"
template="${template//@WAREHOUSE@/$warehouse}"
template="${template//@STATIC_ROOT@/$static_root}"
access_log="${MAC_NGINX_ACCESS_LOG:-/var/log/nginx/mac.access.log}"
if [ "$access_log" = off ]; then
    template="${template//access_log @ACCESS_LOG@ mac_no_query;/access_log off;}"
fi
template="${template//@ACCESS_LOG@/$access_log}"
printf '%s\n' "$template"
