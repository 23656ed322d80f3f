"""The origin document's benchmark in its own language, side by side in one
run: 500 get_obj + 500 send_obj("lxx nb") through rkit against the Rust
example server, and through xmlrpc.client against SimpleXMLRPCServer (in a
process of its own, as the Rust server is); then rkit's calls per second
with 64 calls in flight from one client, and how long `rpc call` takes
from start to exit.

    cargo build --release -p rpc-examples -p rpc-cli
    python3 python/bench.py [--server target/release/server] [--rpc target/release/rpc] [--rounds 5]

The best of each round's time is reported (the least disturbed run).
"""

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkit  # noqa: E402
import rkit.aio  # noqa: E402

XMLRPC_SERVER = """
import sys
from xmlrpc.server import SimpleXMLRPCServer, SimpleXMLRPCRequestHandler

class Quiet(SimpleXMLRPCRequestHandler):
    def log_message(self, *args):
        pass

server = SimpleXMLRPCServer(("127.0.0.1", 0), requestHandler=Quiet, allow_none=True, logRequests=False)
server.register_function(lambda: "lxx nb", "get_obj")
server.register_function(lambda data: None, "send_obj")
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(get_obj, send_obj):
    start = time.perf_counter()
    for _ in range(500):
        get_obj()
    for _ in range(500):
        send_obj("lxx nb")
    return time.perf_counter() - start


def in_flight(proxy, threads=64, calls=200):
    """Calls per second with `threads` callers sharing one connection."""
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        for _ in range(calls):
            proxy.SeedObjects.get_obj()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return threads * calls / (time.perf_counter() - start)


async def aio_figures(addr, rounds):
    """rkit.aio: the seed benchmark awaited in sequence, and 64 tasks with
    a call each in flight at a time."""
    proxy = await rkit.aio.connect(addr)
    seq, rates = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(500):
            await proxy.SeedObjects.get_obj()
        for _ in range(500):
            await proxy.SeedObjects.send_obj("lxx nb")
        seq.append(time.perf_counter() - start)

        async def worker():
            for _ in range(200):
                await proxy.SeedObjects.get_obj()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(64)))
        rates.append(64 * 200 / (time.perf_counter() - start))
    await proxy.close()
    return min(seq), max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="target/release/server")
    parser.add_argument("--rpc", default="target/release/rpc")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()

    addr = "127.0.0.1:%d" % free_port()
    rust = subprocess.Popen([options.server, "--addr", addr], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    rust.stdout.readline()  # "serving ... on ADDR": it listens
    python = subprocess.Popen([sys.executable, "-c", XMLRPC_SERVER], stdout=subprocess.PIPE)
    xml_port = int(python.stdout.readline())
    try:
        proxy = rkit.ServerProxy(addr)
        xml = xmlrpc.client.ServerProxy("http://127.0.0.1:%d" % xml_port, allow_none=True)
        rkit_times, xml_times = [], []
        for _ in range(options.rounds):
            rkit_times.append(seed(proxy.SeedObjects.get_obj, proxy.SeedObjects.send_obj))
            xml_times.append(seed(xml.get_obj, xml.send_obj))
        best_rkit, best_xml = min(rkit_times), min(xml_times)
        print("seed benchmark, 500 get_obj + 500 send_obj, best of %d:" % options.rounds)
        print("  rkit        %7.1f ms" % (best_rkit * 1e3))
        print("  xmlrpc      %7.1f ms" % (best_xml * 1e3))
        print("  rkit is %.1fx faster" % (best_xml / best_rkit))
        rates = [in_flight(proxy) for _ in range(options.rounds)]
        print("rkit, 64 calls in flight on one connection: %.0f calls/s (best of %d)"
              % (max(rates), options.rounds))
        proxy.close()
        aio_seed, aio_rate = asyncio.run(aio_figures(addr, options.rounds))
        print("rkit.aio: seed benchmark %.1f ms; 64 calls in flight: %.0f calls/s" % (aio_seed * 1e3, aio_rate))
        if os.path.exists(options.rpc):
            took = []
            for _ in range(max(options.rounds, 5)):
                start = time.perf_counter()
                out = subprocess.run([options.rpc, "call", addr, "SeedObjects.get_obj"], capture_output=True)
                took.append(time.perf_counter() - start)
                assert out.stdout.strip() == b'"lxx nb"', out
            took.sort()
            print("rpc call (start, describe, call, exit): median %.1f ms, best %.1f ms"
                  % (took[len(took) // 2] * 1e3, took[0] * 1e3))
        else:
            print("rpc call: %s not built; skipped" % options.rpc)
    finally:
        rust.terminate()
        python.terminate()
        rust.wait()
        python.wait()


if __name__ == "__main__":
    main()
