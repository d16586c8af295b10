# Shared by scripts/bench.sh and scripts/cluster-bench.sh (sourced, not run): the
# release build, stopping what a script started, free ports, and admin GETs with bash
# alone (no curl or jq needed).

echo "== build (release)"
cargo build --release -q -p im-gateway -p loadtest
GW=./target/release/im-gateway
LT=./target/release/loadtest

# Everything started goes into PIDS and is stopped on exit, failure included.
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# free_port NAME: sets $NAME to a port nothing listens on and this script has not
# handed out yet (the ports are bound later, so two calls must never agree).
TAKEN=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        [[ $TAKEN == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            TAKEN+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

# http_get PORT PATH: the raw HTTP answer of a GET on 127.0.0.1:PORT.
http_get() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' "$2" >&3
    cat <&3
    exec 3>&-
}
