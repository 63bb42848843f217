#!/bin/sh
# The demo, from a fresh Debian 12 machine (as root): installs dependencies, builds, makes a throwaway CA, starts
# konn-server, konn-agent and a small web server on loopback, sends a real HTTP request through the tunnel
#   curl → konn-server (CONNECT over mTLS) → (mTLS HTTP/2 gRPC tunnel) → konn-agent → target
# and then keeps both daemons in the foreground with their logs until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
sh tools/install-deps.sh
echo "Building konn..."
sh tools/build.sh

demo=$top/.demo
rm -rf "$demo"
mkdir -p "$demo/www"
sh tests/gen-certs.sh "$demo/certs"
c=$demo/certs
echo "Hello through konn: this page was served by the target on 127.0.0.1:18080." > "$demo/www/index.html"

pids=""
cleanup() {
        trap - INT TERM EXIT
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
        wait 2>/dev/null || true
        echo
        echo "Demo stopped."
}
trap cleanup INT TERM EXIT

/usr/bin/python3 -m http.server 18080 --bind 127.0.0.1 --directory "$demo/www" >"$demo/target.log" 2>&1 &
pids="$pids $!"

# The API server's side: HTTP CONNECT over TCP with mutual TLS on 18090; agents connect on 18091.
./konn-server --mode=http-connect --server-port=18090 --server-bind-address=127.0.0.1 \
        --server-cert="$c/server.crt" --server-key="$c/server.key" --server-ca-cert="$c/ca.crt" \
        --agent-port=18091 --agent-bind-address=127.0.0.1 \
        --cluster-cert="$c/server.crt" --cluster-key="$c/server.key" --cluster-ca-cert="$c/ca.crt" \
        --server-id=demo-server --log-level=debug --log-target=stderr-fields &
pids="$pids $!"
sleep 0.3
./konn-agent --proxy-server-host=127.0.0.1 --proxy-server-port=18091 --ca-cert="$c/ca.crt" \
        --agent-cert="$c/agent.crt" --agent-key="$c/agent.key" --agent-id=demo-node \
        --agent-identifiers="host=demo-node&ipv4=127.0.0.1" \
        --log-level=debug --log-target=stderr-fields &
pids="$pids $!"

# Wait (bounded) until the agent's tunnel is up, then send a request through it.
i=0
until curl -sf -p -o /dev/null --max-time 2 --proxy https://localhost:18090 --proxy-cacert "$c/ca.crt" \
        --proxy-cert "$c/client.crt" --proxy-key "$c/client.key" http://127.0.0.1:18080/; do
        i=$((i + 1))
        if [ "$i" -ge 50 ]; then
                echo "The tunnel did not come up within 10 s." >&2
                exit 1
        fi
        sleep 0.2
done
echo
echo "==> curl -p --proxy https://localhost:18090 (CONNECT over mTLS) http://127.0.0.1:18080/"
curl -sS -p --max-time 5 --proxy https://localhost:18090 --proxy-cacert "$c/ca.crt" \
        --proxy-cert "$c/client.crt" --proxy-key "$c/client.key" http://127.0.0.1:18080/
echo "==> The request went curl -> konn-server -> konn-agent -> target and back. Ctrl-C to stop."
echo
wait
