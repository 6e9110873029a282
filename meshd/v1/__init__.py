"""meshd.v1: generated protobuf and gRPC code for the admin API (see proto/meshd/v1/)."""
