"""A standalone meshd relay process for the benchmark: h2c listener -> one h2c upstream."""
import asyncio
import sys

import uvloop

from meshd.dataplane import Engine, Target


async def main(listen_port: int, upstream_port: int) -> None:
    target = Target("127.0.0.1", upstream_port)
    engine = Engine(lambda head: target)
    await engine.listen("127.0.0.1", listen_port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
