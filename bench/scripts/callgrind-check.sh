#!/usr/bin/env bash
# Instructions per call of the cached Check and of the gRPC health Check on the release server,
# counted by callgrind (repeatable whatever else the machine does), for BENCHMARKS.md's profile
# table. Two servers run under valgrind one after the other, each sent N calls of one RPC by
# h2load (Debian's nghttp2-client); start-up and seeding are excluded by zeroing the counters
# (callgrind_control --zero) just before the calls and dumping just after.
#
#   bench/scripts/callgrind-check.sh [N]      # default 20000; output in target/callgrind/
#   callgrind_annotate --inclusive=yes target/callgrind/check.out.1 | head -60
#   TESSERA_BINARY=/tmp/old/tessera bench/scripts/callgrind-check.sh   # another build
#   TESSERA_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 bench/scripts/...  # another malloc
set -euo pipefail
cd "$(dirname "$0")/../.."
calls="${1:-20000}"
binary="${TESSERA_BINARY:-target/release/tessera}"   # or another build, to compare two
out=target/callgrind
mkdir -p "$out"
for tool in valgrind callgrind_control h2load python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "error: build $binary first (cargo build --release)" >&2; exit 1; }

# A gRPC frame (flag, big-endian length) of a CheckRequest: token = 1, permission = 3,
# client_ip = 4, user_agent = 5, endpoint = 6, all strings.
frame_check() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
def field(number, text):
    data = text.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data
message = (field(1, sys.argv[1]) + field(3, "orders:read") + field(4, "10.0.0.1")
           + field(5, "orders-service/1.4 (h2load)") + field(6, "GET /v1/orders"))
open(sys.argv[2], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
}
printf '\0\0\0\0\0' >"$out/health.bin"

run() { # run NAME PATH BODY
    local name=$1 path=$2 body=$3 dir port pid
    dir=$(mktemp -d)
    local key
    key=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    env -i PATH="$PATH" HOME="$HOME" TESSERA_DATABASE_URL="sqlite://$dir/tessera.db" \
        TESSERA_LISTEN=127.0.0.1:0 TESSERA_METRICS_LISTEN=127.0.0.1:0 TESSERA_ADMIN_KEYS="$key" \
        TESSERA_LOG=warn ${TESSERA_PRELOAD:+LD_PRELOAD=$TESSERA_PRELOAD} valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" \
        "$binary" serve --port-file "$dir/ports.json" 2>"$out/$name.log" &
    pid=$!
    trap "kill $pid 2>/dev/null || true" EXIT
    for _ in $(seq 1 600); do [ -s "$dir/ports.json" ] && break; sleep 0.1; done
    port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$dir/ports.json")
    export TESSERA_SERVER="http://$port" TESSERA_ADMIN_KEY="$key"
    # Under valgrind the start (migrations) takes seconds: retry until it serves.
    for _ in $(seq 1 120); do
        "$binary" principal upsert bench --permission '*' >/dev/null 2>&1 && break
        sleep 0.5
    done
    local secret
    secret=$("$binary" token create --owner bench --name bench --permission 'orders:*' \
        --rate-limit 4000000000 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
    if [ "$body" = check ]; then frame_check "$secret" "$out/check.bin"; fi
    local args=(-c 4 -m 32 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/$body.bin")
    # Warm: the credential cached, connections and buffers grown; then measure.
    h2load -n 2000 "${args[@]}" "http://$port$path" >/dev/null
    callgrind_control --zero "$pid" >/dev/null
    h2load -n "$calls" "${args[@]}" "http://$port$path" | grep -E "^(finished|requests):"
    callgrind_control --dump="$name" "$pid" >/dev/null
    kill -TERM "$pid"; wait "$pid" || true
    rm -rf "$dir"
}
run health /grpc.health.v1.Health/Check health
run check /tessera.v1.AuthorizationService/Check check
for name in health check; do
    # The dump named by --dump is the newest numbered file of each run.
    file=$(ls -t "$out/$name.out".* | head -1)
    total=$(callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$name: $((total / calls)) instructions per call ($file)"
done
