#!/usr/bin/env python3
"""A bounded gRPC load generator for the netns cluster: calls a virtual service through the
local meshd's egress at a fixed rate and reports, per second, who answered and what failed.

    python deploy/netns/load.py --egress 127.0.0.1:15001 --authority api.shop.local:9090 \
        --rps 200 --seconds 60

It speaks to meshd as any gRPC app would (it sets only the authority) and calls
/shop.Api/Get, which deploy/quickstart/demo.py's services answer with "<name> answered ...";
the first word names the instance that answered. It runs until --seconds pass or it gets
SIGTERM/SIGINT, and at most --max-calls calls, then waits for the calls in flight.

Output, one JSON object per line on stdout once it ends:
  {"sec": S, "t": MONO, "sent": n, "ok": n, "by": {who: n}, "failed": {"CODE reason": n}}
      one per second of sending (t: the bucket's start, time.monotonic(), which is the
      same clock in every network namespace of the machine)
  {"summary": {...}}   the totals, the first failures with when they were sent, latencies,
      and per instance the send time of the last call it answered ("last")

The channel waits for the egress when it is not there (wait_for_ready), so a local meshd
restarting delays calls instead of failing them; gRPC's transparent retry resends streams
a draining meshd refused with GOAWAY. Nothing else is retried here: every other failure
counts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter

import grpc

METHOD = "/shop.Api/Get"
SAMPLES = 50  # failures kept with their send time, for the report


class Load:
    """Counts by one-second bucket of send time; the summary aggregates them."""

    def __init__(self, rps: float, seconds: float, max_calls: int, deadline: float, max_inflight: int):
        self.rps, self.seconds, self.max_calls = rps, seconds, max_calls
        self.deadline, self.max_inflight = deadline, max_inflight
        self.buckets: dict[int, dict] = {}
        self.samples: list[dict] = []
        self.latencies: list[float] = []
        self.last: dict[str, float] = {}  # instance -> send time of the latest call it answered
        self.skipped = 0  # sends skipped because max_inflight calls were already open
        self.inflight = 0
        self.stop = asyncio.Event()

    def bucket(self, sec: int, t0: float) -> dict:
        b = self.buckets.get(sec)
        if b is None:
            b = self.buckets[sec] = {"sec": sec, "t": round(t0 + sec, 3), "sent": 0, "ok": 0,
                                     "by": Counter(), "failed": Counter()}
        return b

    async def one(self, call, sec: int, t0: float, n: int) -> None:
        sent = time.monotonic()
        b = self.bucket(sec, t0)
        b["sent"] += 1
        try:
            answer = await call(b"call %d" % n, timeout=self.deadline, wait_for_ready=True)
            b["ok"] += 1
            who = answer.split(b" ", 1)[0].decode(errors="replace")
            b["by"][who] += 1
            self.last[who] = max(sent, self.last.get(who, 0.0))
            self.latencies.append(time.monotonic() - sent)
        except grpc.aio.AioRpcError as err:
            trailers = dict(err.trailing_metadata() or ())
            what = f"{err.code().name} {trailers.get('x-meshd-reason', '')}".strip()
            b["failed"][what] += 1
            if len(self.samples) < SAMPLES:
                self.samples.append({"t": round(sent, 3), "what": what, "details": (err.details() or "")[:200],
                                     "took": round(time.monotonic() - sent, 3)})
        finally:
            self.inflight -= 1

    async def run(self, egress: str, authority: str) -> dict:
        # Reconnect within half a second once the egress is back (gRPC's default backoff grows
        # to several seconds while a local meshd restarts, which would outlast the deadline).
        channel = grpc.aio.insecure_channel(egress, options=[
            ("grpc.default_authority", authority), ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)])
        call = channel.unary_unary(METHOD)
        tasks: set[asyncio.Task] = set()
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set() and n < self.max_calls:
            due = t0 + n / self.rps
            now = time.monotonic()
            if due - t0 >= self.seconds:
                break
            if due > now:
                try:
                    await asyncio.wait_for(self.stop.wait(), due - now)
                    break
                except asyncio.TimeoutError:
                    pass
            sec = int(due - t0)
            if self.inflight >= self.max_inflight:
                self.skipped += 1
            else:
                self.inflight += 1
                task = asyncio.ensure_future(self.one(call, sec, t0, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=self.deadline + 5)
        await channel.close()
        return self.summary(time.monotonic() - t0)

    def summary(self, elapsed: float) -> dict:
        by, failed = Counter(), Counter()
        sent = ok = 0
        for b in self.buckets.values():
            sent += b["sent"]
            ok += b["ok"]
            by.update(b["by"])
            failed.update(b["failed"])
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 2) if lat else None
        return {"sent": sent, "ok": ok, "failed": dict(failed), "by": dict(by), "skipped": self.skipped,
                "seconds": round(elapsed, 2), "rps": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
                "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
                "last": {who: round(t, 3) for who, t in sorted(self.last.items())},
                "first_failures": self.samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--egress", default="127.0.0.1:15001", help="the local meshd's egress (HOST:PORT)")
    p.add_argument("--authority", default="api.shop.local:9090", help="the virtual service to call")
    p.add_argument("--rps", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=60.0, help="stop sending after this long (a bound)")
    p.add_argument("--max-calls", type=int, default=100_000, help="stop sending after this many (a bound)")
    p.add_argument("--deadline", type=float, default=10.0, help="each call's gRPC deadline, seconds")
    p.add_argument("--max-inflight", type=int, default=1000)
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--table", action="store_true", help="print the summary as a table, not JSON")
    args = p.parse_args(argv)
    if args.rps <= 0 or args.seconds <= 0:
        p.error("--rps and --seconds must be positive")
    load = Load(args.rps, args.seconds, args.max_calls, args.deadline, args.max_inflight)

    async def go() -> dict:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, load.stop.set)
        return await load.run(args.egress, args.authority)
    summary = asyncio.run(go())
    if not args.quiet:
        for sec in sorted(load.buckets):
            b = load.buckets[sec]
            print(json.dumps({**b, "by": dict(b["by"]), "failed": dict(b["failed"])}), flush=True)
    if args.table:
        print_table(summary, args.egress, args.authority)
    else:
        print(json.dumps({"summary": summary}), flush=True)
    return 0 if summary["ok"] and not summary["failed"] else 1


def print_table(s: dict, egress: str, authority: str) -> None:
    print(f"{s['sent']} calls in {s['seconds']:.0f} s ({s['rps']} rps) through {egress} to {authority}:")
    for who, n in sorted(s["by"].items()):
        print(f"  {who:16s} {n:7d}  {100 * n / max(s['ok'], 1):5.1f}%")
    lat = s["latency_ms"]
    print(f"  latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
    for what, n in sorted(s["failed"].items()):
        print(f"  failed: {n} x {what}")
    if not s["failed"]:
        print("  failed: none")


if __name__ == "__main__":
    sys.exit(main())
