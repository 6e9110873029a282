"""Gate of issue 14: DescribeRoute through App Mesh's REST API (TLS, SigV4, boto3) costs meshd
at most 1.5x the CPU of the same call over gRPC (TLS, bearer token), measured on one meshd in
the same run, in alternating blocks (the quick variant of `python -m bench.awsapi_overhead`)."""
import pytest

from bench.awsapi_overhead import GATE, measure

pytestmark = [pytest.mark.awsapi, pytest.mark.etcd]


def test_describe_route_over_rest_costs_at_most_1_5x_grpc(benchmark, gate_figure):
    r = benchmark.pedantic(measure, kwargs={"calls": 500, "runs": 4}, rounds=1, iterations=1)
    gate_figure("awsapi_rest_cpu_vs_grpc", r["ratio"], GATE)
    benchmark.extra_info.update(r)
    assert r["calls"] == 2000
    assert r["ratio"] <= GATE, f"REST DescribeRoute costs {r['ratio']:.3f}x gRPC's server CPU (gate {GATE}): {r}"
