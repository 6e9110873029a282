#!/usr/bin/env bash
# Listing a mesh's nodes a page at a time, the ways the AWS CLI offers: its own paging
# with a small --page-size, and a script's paging with --max-items and --starting-token.
# Usage: pages.sh OUT_DIR MESH NODE...  (reads MESHD_ENDPOINT; the AWS_* environment signs)
set -euo pipefail

out="$(cd "${1:?usage: pages.sh OUT_DIR MESH NODE...}" && pwd)"
mesh="${2:?no mesh name}"
shift 2

aws appmesh create-mesh --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" >/dev/null
for node in "$@"; do
    aws appmesh create-virtual-node --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" \
        --virtual-node-name "$node" \
        --spec "{\"listeners\": [{\"portMapping\": {\"port\": 8080, \"protocol\": \"http\"}}],
                 \"serviceDiscovery\": {\"dns\": {\"hostname\": \"$node.$mesh.local\"}}}" >/dev/null
done

# The CLI follows nextToken itself; --debug logs each request it makes.
aws appmesh list-virtual-nodes --endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" --page-size 1 \
    --query 'virtualNodes[].virtualNodeName' --output text --debug \
    >"$out/page-size.txt" 2>"$out/page-size.debug"

# A script's own paging: two at a time, passing the CLI's NextToken back. The token comes
# from the JSON output: with --output text, awscli 1.x applies --query to every page and
# prints "None" for the pages before the last.
token=""
page=0
while :; do
    page=$((page + 1))
    args=(--endpoint-url "$MESHD_ENDPOINT" --mesh-name "$mesh" --max-items 2 --page-size 2)
    if [[ -n "$token" ]]; then
        args+=(--starting-token "$token")
    fi
    aws appmesh list-virtual-nodes "${args[@]}" --output json >"$out/page-$page.json"
    token="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("NextToken", ""))' \
        "$out/page-$page.json")"
    if [[ -z "$token" ]]; then
        break
    fi
    if ((page > 20)); then
        echo "pages.sh: NextToken never ran out" >&2
        exit 1
    fi
done
echo "$page" >"$out/pages"
