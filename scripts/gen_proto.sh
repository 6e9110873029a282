#!/usr/bin/env bash
# Regenerates the Python code for proto/meshd/v1/*.proto into meshd/v1/, where the
# generated imports (`from meshd.v1 import spec_pb2`) work unpatched.
# tests/test_generic_clients.py runs the same generation and fails if the committed copy differs.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. proto/meshd/v1/*.proto
python -m grpc_tools.protoc -Iproto --grpc_python_out=. proto/meshd/v1/admin.proto proto/meshd/v1/security.proto
