"""Tests of the HTTP/2 forwarding engine (meshd.dataplane) with real gRPC peers over loopback."""
