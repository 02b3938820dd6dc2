"""py-echo-client: an independent WebSocket client (Python `websockets`, sync
API) used by wsecho's interop tests (tests/it/interop.rs) to check an echo server.

Usage: client.py URL [--close-code N] [--ca FILE] [--cert FILE --key FILE]

Sends text, unicode text, binary 0..255, a 1 MiB binary message and a ping,
checks every echo (type and bytes) and the pong, then sends Close(N, "bye")
(N defaults to 1000) and expects the server's close frame to carry code N.
Prints "ok" and exits 0, or prints what failed and exits 1. Deadline: 20 s.
For a wss:// URL, --ca names the PEM CA certificates to trust (instead of the
system's) and --cert/--key a client certificate to present.
"""

import argparse
import os
import ssl
import threading

from websockets.sync.client import connect

DEADLINE = 20.0


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    os._exit(1)


def check(ws, close_code):
    def round_trip(name, msg):
        try:
            ws.send(msg)
            got = ws.recv(timeout=10)
        except Exception as e:
            fail(f"{name}: {e!r}")
        if type(got) is not type(msg):
            kind = "text" if isinstance(got, str) else "binary"
            fail(f"{name}: echo is {kind}, want {'text' if isinstance(msg, str) else 'binary'}")
        if got != msg:
            fail(f"{name}: echo differs ({len(got)} vs {len(msg)} units)")

    round_trip("text", "hello")
    round_trip("unicode text", "héllo wörld — 你好 🌍 Ωμέγα")
    round_trip("binary 0..255", bytes(range(256)))
    round_trip("1 MiB binary", bytes((i * 7 + (i >> 8)) & 0xFF for i in range(2**20)))

    pong = ws.ping(b"ping-payload")  # set when the pong with this payload arrives
    if not pong.wait(10):
        fail("ping: no pong with the same payload within 10 s")
    round_trip("text after ping", "after-ping")

    ws.close(close_code, "bye")
    if ws.close_code != close_code:
        fail(f"close: server's close code {ws.close_code} ({ws.close_reason!r}),"
             f" want {close_code}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--close-code", type=int, default=1000)
    ap.add_argument("--ca", help="PEM CA certificates to trust for wss://")
    ap.add_argument("--cert", help="PEM client certificate to present (needs --key)")
    ap.add_argument("--key", help="PEM private key for --cert")
    args = ap.parse_args()
    if (args.cert is None) != (args.key is None):
        ap.error("--cert and --key go together")

    tls = {}
    if args.url.startswith("wss://"):
        # Verifies the chain and the host name (an IP address against the IP SANs).
        context = ssl.create_default_context(cafile=args.ca)
        if args.cert is not None:
            context.load_cert_chain(args.cert, args.key)
        tls["ssl"] = context
    elif args.ca or args.cert:
        ap.error("--ca, --cert and --key need a wss:// URL")

    timer = threading.Timer(DEADLINE, fail, ["overall 20 s deadline exceeded"])
    timer.daemon = True
    timer.start()

    try:
        ws = connect(args.url, open_timeout=5, close_timeout=5,
                     ping_interval=None, max_size=4 * 2**20, proxy=None, **tls)
    except Exception as e:
        fail(f"connect {args.url}: {e!r}")
    with ws:
        check(ws, args.close_code)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
