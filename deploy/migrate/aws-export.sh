#!/usr/bin/env bash
# Export one App Mesh mesh with the AWS CLI as App Mesh CLI-input JSON files, one per
# resource, which `meshctl apply -f DIR` (or `aws appmesh create-* --cli-input-json`) takes
# back unchanged.
#
#   deploy/migrate/aws-export.sh MESH DIR [extra aws options, e.g. --region eu-west-1 --profile prod]
#
# Works against AWS App Mesh, and against meshd's App Mesh API (add --endpoint-url).
set -euo pipefail
mesh="${1:?usage: aws-export.sh MESH DIR [aws options]}"
dir="${2:?usage: aws-export.sh MESH DIR [aws options]}"
shift 2
mkdir -p "$dir"
am() { aws appmesh "$@" --output json; }
n=0
write() {  # write KIND NAME DOCUMENT (in this shell, not a pipeline's: n counts)
  n=$((n + 1))
  printf '%s\n' "$3" >"$dir/$(printf '%03d' "$n")-$1-$2.json"
}
doc() {  # doc DESCRIBE_JSON KEY: {names..., spec, tags} of one resource
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])[sys.argv[2]]
out = {k: v for k, v in d.items() if k.endswith("Name")}
out["spec"] = d.get("spec", {})
tags = json.loads(sys.argv[3]).get("tags")
if tags:
    out["tags"] = tags
print(json.dumps(out, indent=2))' "$1" "$2" "$3"
}
arn() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]]["metadata"]["arn"])' "$1" "$2"; }
names() { python3 -c 'import json,sys; print("\n".join(x[sys.argv[2]] for x in json.loads(sys.argv[1])[sys.argv[3]]))' "$1" "$2" "$3"; }

d=$(am describe-mesh --mesh-name "$mesh" "$@")
write mesh "$mesh" "$(doc "$d" mesh "$(am list-tags-for-resource --resource-arn "$(arn "$d" mesh)" "$@" --query '{tags: tags}')")"
for node in $(names "$(am list-virtual-nodes --mesh-name "$mesh" "$@")" virtualNodeName virtualNodes); do
  d=$(am describe-virtual-node --mesh-name "$mesh" --virtual-node-name "$node" "$@")
  write vn "$node" "$(doc "$d" virtualNode "$(am list-tags-for-resource --resource-arn "$(arn "$d" virtualNode)" "$@" --query '{tags: tags}')")"
done
for router in $(names "$(am list-virtual-routers --mesh-name "$mesh" "$@")" virtualRouterName virtualRouters); do
  d=$(am describe-virtual-router --mesh-name "$mesh" --virtual-router-name "$router" "$@")
  write vr "$router" "$(doc "$d" virtualRouter "$(am list-tags-for-resource --resource-arn "$(arn "$d" virtualRouter)" "$@" --query '{tags: tags}')")"
  for route in $(names "$(am list-routes --mesh-name "$mesh" --virtual-router-name "$router" "$@")" routeName routes); do
    d=$(am describe-route --mesh-name "$mesh" --virtual-router-name "$router" --route-name "$route" "$@")
    write route "$router-$route" "$(doc "$d" route "$(am list-tags-for-resource --resource-arn "$(arn "$d" route)" "$@" --query '{tags: tags}')")"
  done
done
for svc in $(names "$(am list-virtual-services --mesh-name "$mesh" "$@")" virtualServiceName virtualServices); do
  d=$(am describe-virtual-service --mesh-name "$mesh" --virtual-service-name "$svc" "$@")
  write vs "$svc" "$(doc "$d" virtualService "$(am list-tags-for-resource --resource-arn "$(arn "$d" virtualService)" "$@" --query '{tags: tags}')")"
done
for gw in $(names "$(am list-virtual-gateways --mesh-name "$mesh" "$@")" virtualGatewayName virtualGateways); do
  d=$(am describe-virtual-gateway --mesh-name "$mesh" --virtual-gateway-name "$gw" "$@")
  write vgw "$gw" "$(doc "$d" virtualGateway "$(am list-tags-for-resource --resource-arn "$(arn "$d" virtualGateway)" "$@" --query '{tags: tags}')")"
  for gr in $(names "$(am list-gateway-routes --mesh-name "$mesh" --virtual-gateway-name "$gw" "$@")" gatewayRouteName gatewayRoutes); do
    d=$(am describe-gateway-route --mesh-name "$mesh" --virtual-gateway-name "$gw" --gateway-route-name "$gr" "$@")
    write gr "$gw-$gr" "$(doc "$d" gatewayRoute "$(am list-tags-for-resource --resource-arn "$(arn "$d" gatewayRoute)" "$@" --query '{tags: tags}')")"
  done
done
echo "exported $n resources of mesh $mesh to $dir" >&2
