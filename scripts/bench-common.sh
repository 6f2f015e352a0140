# What scripts/bench, scripts/bench-sweep and scripts/bench-memory share: the tools they need,
# the release build, a one-node cluster, and nginx in front of its node. Sourced, not run; the
# caller has `set -euo pipefail` and is at the repository's root.

# Every process started here, killed on the way out, however the script ends.
pids=()
policy=""
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$policy" ] && rm -f "$policy"
  return 0
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bench_tools COMMAND:PACKAGE...: installs from Debian's packages (as root) the packages whose
# command is missing; the packages' own services are not started.
bench_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${missing[*]}: run as root, or apt-get install them" >&2
    exit 1
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then rm -f "$policy"; policy=""; fi
}

# Builds the release binary. GEN is this build's (the load generator); BIN is the one under
# test: this build, or SHARDGATE_BIN (a binary built elsewhere, an older commit, say).
bench_build() {
  cargo build --release -p shardgate --locked
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  GEN="$target_dir/release/shardgate"
  BIN=${SHARDGATE_BIN:-$GEN}
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_cluster DIR [UP ARGS...]: `shardgate up` with one node, sessions in memory only, in
# DIR, until it is ready. Sets UP_PID, GATEWAY (its /mcp URL), NODE (the node's session
# listener), CREDS, NODE_PID and GATEWAY_PID.
bench_cluster() {
  local dir=$1; shift
  "$BIN" up --nodes 1 --voters 1 --port 0 --store none --data-dir "$dir" "$@" > "$dir.log" 2> "$dir.err" &
  UP_PID=$!
  pids+=("$UP_PID")
  for _ in $(seq 1 150); do
    grep -q '^ready' "$dir.log" 2>/dev/null && break
    sleep 0.2
  done
  grep -q '^ready' "$dir.log" || { echo "the cluster did not start:" >&2; cat "$dir.err" >&2; exit 1; }
  GATEWAY=$(awk '/^gateway /{print $3; exit}' "$dir.log")
  NODE=$(sed -n 's/^node [^ ]* session=\([^ ]*\) .*/\1/p' "$dir.log" | head -1)
  CREDS=$(awk '/^credentials /{print $2; exit}' "$dir.log")
  NODE_PID=$(pgrep -f -- "shardgate node .*$dir" | head -1)
  GATEWAY_PID=$(pgrep -f -- "shardgate gateway .*$dir" | head -1)
}

# bench_nginx DIR: nginx from Debian's packages in front of NODE, configured as an operator
# would without us: `hash $http_mcp_session_id consistent`, HTTP/1.1 keep-alive to the node,
# TLS with the cluster's client certificate (the node takes only authenticated peers). Sets
# NGINX_URL, NGINX_PID and NGINX_PIDS (its workers).
bench_nginx() {
  local dir=$1 port user_line=""
  local nginx
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  port=$(free_port)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && user_line="user root root;"
  cat > "$dir/nginx.conf" <<EOF
$user_line
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  upstream mcp_servers {
    hash \$http_mcp_session_id consistent;
    server $NODE max_fails=0;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    location /mcp {
      proxy_pass https://mcp_servers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
      proxy_ssl_certificate $CREDS/cert.pem;
      proxy_ssl_certificate_key $CREDS/key.pem;
      proxy_ssl_trusted_certificate $CREDS/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
  "$nginx" -p "$dir" -c "$dir/nginx.conf" 2>"$dir/start.err" &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "nginx did not start:" >&2; cat "$dir/start.err" >&2; exit 1; }
  NGINX_URL="http://127.0.0.1:$port/mcp"
  # This nginx's workers only (not another run's): the children of its master.
  NGINX_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
}
