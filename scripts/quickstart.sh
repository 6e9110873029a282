#!/usr/bin/env bash
# The main job in one command: install what is needed, start a local mesh on the embedded
# default (meshd starting its own etcd), apply the sample App Mesh configuration in
# deploy/quickstart/shop, and show what happens through meshctl.
# Environment: MESHD_ADMIN (default 127.0.0.1:7000), MESHD_AWS_API (default 127.0.0.1:7443), MESHD_STATE_DIR (default ./.meshd-quickstart),
# MESHD_ETCD_PORT / MESHD_ETCD_PEER_PORT (default 23790 / 23800), QUICKSTART_WAIT=0|1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="$(cd "${MESHD_VENV:-.venv}" && pwd)"
export PATH="$VENV/bin:$PATH"
ADMIN="${MESHD_ADMIN:-127.0.0.1:7000}"
AWS_API="${MESHD_AWS_API:-127.0.0.1:7443}"
STATE="${MESHD_STATE_DIR:-$PWD/.meshd-quickstart}"
export MESHCTL_SERVER="$ADMIN"
mkdir -p "$STATE"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "making a cluster key (the local mesh CA signs with it) and starting the sample services"
[ -f "$STATE/cluster.key" ] || meshd init --cluster-key "$STATE/cluster.key"
python deploy/quickstart/demo.py serve 9091=api-v1 9092=api-v2 --web 8080 >"$STATE/services.log" 2>&1 &
SERVICES_PID=$!

step "starting meshd (admin API on $ADMIN, embedded etcd, data plane from deploy/quickstart/meshd.yaml)"
meshd run --insecure-local --admin "$ADMIN" --state-dir "$STATE" --host-name quickstart \
  --cluster-key "$STATE/cluster.key" --config deploy/quickstart/meshd.yaml --aws-api "$AWS_API" \
  --etcd-port "${MESHD_ETCD_PORT:-23790}" --etcd-peer-port "${MESHD_ETCD_PEER_PORT:-23800}" \
  >"$STATE/meshd.log" 2>&1 &
MESHD_PID=$!
cleanup() {
  if kill -0 "$MESHD_PID" 2>/dev/null; then
    step "stopping meshd (SIGTERM: it deregisters its instances, drains, and stops its etcd)"
    kill -TERM "$MESHD_PID"; wait "$MESHD_PID" || true
  fi
  kill -TERM "$SERVICES_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 60); do
  meshctl --timeout 1 get meshes >/dev/null 2>&1 && break
  kill -0 "$MESHD_PID" 2>/dev/null || { echo "meshd exited; its log:"; cat "$STATE/meshd.log"; exit 1; }
  sleep 0.5
done
show tail -n 3 "$STATE/meshd.log"

step "applying the sample App Mesh configuration (App Mesh CLI-input JSON, unchanged)"
show meshctl apply -f deploy/quickstart/shop

step "what the mesh now holds"
show meshctl get meshes
show meshctl get virtualnodes --mesh shop
show meshctl get virtualservices --mesh shop
show meshctl get routes --mesh shop --router api-router
show meshctl describe route api-canary --mesh shop --router api-router

step "instances: meshd registered the local apps of its config and health-checks them"
# App Mesh health checks: 5 s apart, healthy after 2 passes (healthyThreshold).
for _ in $(seq 1 30); do
  [ "$(meshctl instance list --mesh shop -o json | grep -c '"health": "HEALTHY"')" -ge 3 ] && break
  sleep 1
done
show meshctl instance list --mesh shop

step "live traffic: web calls api.shop.local through meshd (egress -> mTLS -> ingress), 90/10 canary"
show python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 4

step "meshctl top and graph: per route and target, scraped from meshd's /metrics while traffic runs"
python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 12 >/dev/null &
TRAFFIC_PID=$!
sleep 0.5
show meshctl top --once --interval 3 --mesh shop
show meshctl graph --interval 3 --mesh shop
wait "$TRAFFIC_PID" || true

step "an outside client through the virtual gateway (127.0.0.1:8443): gateway route -> web.shop.local"
show python deploy/quickstart/demo.py get http://127.0.0.1:8443/hello
echo "web's App Mesh access log (logging.accessLog.file /dev/stdout, Envoy's default format):"
grep -v '^{' "$STATE/meshd.log" | tail -n 2 || true

step "shifting the canary from 90/10 to 50/50: diff first, then apply"
shifted="$STATE/route-50-50.json"
sed -e 's/"weight": 90/"weight": 50/' -e 's/"weight": 10/"weight": 50/' \
  deploy/quickstart/shop/30-route-api-canary.json > "$shifted"
show meshctl diff -f "$shifted" || true
show meshctl apply -f "$shifted"
step "the same traffic after the shift (the new route table was swapped in live)"
show python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 4

step "the AWS SDKs and CLI reach meshd: App Mesh's own REST API ($AWS_API), signed with SigV4"
echo "\$ meshctl accesskey create --principal quickstart -o json > $STATE/accesskey.json"
meshctl accesskey create --principal quickstart -o json > "$STATE/accesskey.json"
KEY_ID=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["accessKeyId"])' "$STATE/accesskey.json")
SECRET=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["secretAccessKey"])' "$STATE/accesskey.json")
echo "access key $KEY_ID (principal quickstart; the loopback listener is plaintext, --insecure-local)"
show meshctl role grant quickstart viewer --mesh shop
echo "\$ python deploy/quickstart/demo.py appmesh --endpoint http://$AWS_API --key-id $KEY_ID --secret (from accesskey.json)"
python deploy/quickstart/demo.py appmesh --endpoint "http://$AWS_API" --key-id "$KEY_ID" --secret "$SECRET"

step "bad input gets a precise answer and changes nothing"
show meshctl delete virtualnode api-v2 --mesh shop || true
echo '{"meshName":"shop","virtualRouterName":"api-router","routeName":"bad","spec":{"priority":5000,"httpRoute":{"match":{"prefix":"/"},"action":{"weightedTargets":[{"virtualNode":"api-v1","weight":101}]}}}}' > "$STATE/bad-route.json"
show meshctl apply -f "$STATE/bad-route.json" || true

step "an automated canary: a Rollout moves api-canary to api-v2 step by step, analysing each step, under live traffic"
show cat deploy/quickstart/rollout/api-v2.yaml
python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 40 >"$STATE/rollout-traffic.log" 2>&1 &
TRAFFIC_PID=$!
show meshctl rollout start -f deploy/quickstart/rollout/api-v2.yaml
show meshctl rollout status api-v2 --mesh shop --watch --interval 2 --max-wait 60
kill "$TRAFFIC_PID" 2>/dev/null || true; wait "$TRAFFIC_PID" 2>/dev/null || true
step "after the promotion every call goes to api-v2 (the route's weights, written by the rollout's audited updates)"
show meshctl describe route api-canary --mesh shop --router api-router -o json
show python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 3

cat <<MSG

meshd is running: admin API $ADMIN, embedded etcd under $STATE.
Try: MESHCTL_SERVER=$ADMIN $VENV/bin/meshctl get routes --mesh shop --router api-router -o yaml
Send your own calls: any gRPC client to 127.0.0.1:15001 with authority api.shop.local,
e.g. python deploy/quickstart/demo.py traffic --seconds 10
The AWS CLI: aws appmesh list-meshes --endpoint-url http://$AWS_API (access key in $STATE/accesskey.json)
MSG
if [ "${QUICKSTART_WAIT:-$([ -t 0 ] && echo 1 || echo 0)}" = "1" ]; then
  echo "Press Ctrl-C to stop."
  wait "$MESHD_PID"
fi
