#!/usr/bin/env bash
# The first thing a user runs against a new endpoint: the meshes their credentials see.
# Usage: list_meshes.sh  (reads MESHD_ENDPOINT; the AWS_* environment signs the call)
set -euo pipefail

aws appmesh list-meshes --endpoint-url "$MESHD_ENDPOINT" --query 'meshes[].meshName' --output text
