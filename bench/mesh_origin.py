"""A grpc.aio echo origin for the side-by-side benchmark (BENCH-ANCHORS.md's Python origin).

    python -m bench.mesh_origin PORT

/echo.Echo/Say answers with the request bytes. It echoes the caller's `x-bench` metadata in
its initial metadata and says in a trailer whether the call carried a deadline, so a client
can check that metadata and `grpc-timeout` crossed every hop. Any other method is
UNIMPLEMENTED, by grpcio itself.
"""
import asyncio
import sys

import grpc
import uvloop


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    md = dict(context.invocation_metadata() or ())
    await context.send_initial_metadata((("x-bench", md.get("x-bench", "")),))
    remaining = context.time_remaining()
    context.set_trailing_metadata((("x-deadline", "yes" if remaining is not None and remaining < 3600 else "no"),))
    return request


async def main(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(_say)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
