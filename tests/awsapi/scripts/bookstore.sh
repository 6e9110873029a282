#!/usr/bin/env bash
# An App Mesh user's rollout script, unchanged but for --endpoint-url: a mesh, two versions
# of a service behind a router, a canary weight shift, and the clean-up of a spare node.
# Usage: bookstore.sh OUT_DIR  (reads MESHD_ENDPOINT; the AWS_* environment signs the calls)
# Each read's output lands in OUT_DIR for the test to compare with the gRPC API's answer.
set -euo pipefail

out="$(cd "${1:?usage: bookstore.sh OUT_DIR}" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")"  # so file:// paths are relative, as in the App Mesh docs
mesh=bookstore

aws appmesh create-mesh --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --spec '{"egressFilter": {"type": "DROP_ALL"}}' --output json >"$out/create-mesh.json"

aws appmesh create-virtual-node --endpoint-url "$MESHD_ENDPOINT" \
    --cli-input-json file://node.json >/dev/null
aws appmesh create-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-node-name catalog-v2 --spec '{
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "catalog-v2.bookstore.svc.cluster.local"}}
    }' >/dev/null
# Shorthand syntax, as the CLI's own examples write it.
aws appmesh create-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-node-name scratch \
    --spec 'listeners=[{portMapping={port=9000,protocol=tcp}}],serviceDiscovery={dns={hostname=scratch.bookstore.local}}' >/dev/null

aws appmesh create-virtual-router --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-router-name catalog-router \
    --spec '{"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}' >/dev/null
aws appmesh create-route --endpoint-url "$MESHD_ENDPOINT" --cli-input-json file://route.json >/dev/null

# The canary: shift weight to v2.
aws appmesh update-route --endpoint-url "$MESHD_ENDPOINT" --cli-input-json file://route-v2.json >/dev/null

aws appmesh list-virtual-nodes --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --query 'sort(virtualNodes[].virtualNodeName)' --output text >"$out/nodes-before.txt"

# Nothing routes to scratch, so it goes.
aws appmesh delete-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-node-name scratch --output json >"$out/delete-scratch.json"
aws appmesh list-virtual-nodes --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --query 'sort(virtualNodes[].virtualNodeName)' --output text >"$out/nodes-after.txt"

aws appmesh describe-route --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-router-name catalog-router --route-name catalog-route --output json >"$out/describe-route.json"
aws appmesh describe-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-node-name catalog-v1 --output json >"$out/describe-node.json"
aws appmesh describe-route --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-router-name catalog-router --route-name catalog-route \
    --query 'route.spec.httpRoute.action.weightedTargets[?virtualNode==`catalog-v2`].weight' \
    --output text >"$out/v2-weight.txt"

# Refusals: the script records each exit status and error rather than stopping (set -e).
status=0
aws appmesh delete-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
    --virtual-node-name catalog-v2 2>"$out/delete-in-use.err" || status=$?
echo "$status" >"$out/delete-in-use.rc"

status=0
aws appmesh describe-mesh --endpoint-url "$MESHD_ENDPOINT" --mesh-name no-such-mesh \
    2>"$out/describe-missing.err" || status=$?
echo "$status" >"$out/describe-missing.rc"
