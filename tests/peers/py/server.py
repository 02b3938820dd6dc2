"""py-echo-server: an independent WebSocket echo server (Python `websockets`,
sync API) used as a peer by wsecho's interop tests (tests/it/interop.rs).

Usage: server.py PORT [HOST] [--cert FILE --key FILE [--client-ca FILE]]
(HOST defaults to 127.0.0.1)

Serves WebSocket at /echo (other paths get 404) and echoes every message back
with the same type (text stays text, binary stays binary). Prints "listening"
once ready, and "client close code N" (or "none") when a connection ends.
/closeNNNN (e.g. /close4001) echoes one message, then closes with code NNNN.
The echo and the Close go out under one hold of the connection's lock, so the
client's own Close can only cross ours on the wire, never arrive first.
With --cert and --key (PEM: a certificate chain and its key) it speaks TLS (wss://)
through an ssl.SSLContext; --client-ca also requires client certificates it issued.
"""

import argparse
import http
import re
import ssl

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

CLOSE_PATH = re.compile(r"/close(\d{4})")


def echo(ws):
    close = CLOSE_PATH.fullmatch(ws.request.path)
    try:
        while True:
            msg = ws.recv()  # str for text, bytes for binary
            if close:
                echo_then_close(ws, msg, int(close.group(1)))
            else:
                ws.send(msg)
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else "none"
        print(f"client close code {code}", flush=True)


def echo_then_close(ws, msg, code):
    """Queues the echo and the Close together, then writes both.

    With ws.send() then ws.close(), this thread can be descheduled between the
    two; the client's Close then reaches the server first, the server answers
    it with 1000 and never sends `code`, and a test of the client's exit code
    for `code` fails by chance. send_context() (public in websockets' sync API)
    holds the lock that the receiving thread needs to handle the client's
    Close, from before the echo until the Close is written.
    """
    try:
        with ws.send_context():
            if isinstance(msg, str):
                ws.protocol.send_text(msg.encode())
            else:
                ws.protocol.send_binary(msg)
            ws.protocol.send_close(code)
    except ConnectionClosed:
        pass  # closed by now: the loop's next recv() reports how


def only_echo_path(connection, request):
    if request.path != "/echo" and not CLOSE_PATH.fullmatch(request.path):
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    return None


def tls_context(cert, key, client_ca):
    """A server-side context for the certificate chain and key, or None without them."""
    if cert is None and key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("host", nargs="?", default="127.0.0.1")
    ap.add_argument("--cert", help="PEM certificate chain: serve wss:// (needs --key)")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--client-ca", help="PEM CA certificates: require client certificates")
    args = ap.parse_args()
    if (args.cert is None) != (args.key is None):
        ap.error("--cert and --key go together")
    if args.client_ca is not None and args.cert is None:
        ap.error("--client-ca needs --cert and --key")
    context = tls_context(args.cert, args.key, args.client_ca)
    with serve(echo, args.host, args.port, process_request=only_echo_path,
               max_size=None, ping_interval=None, ssl=context) as server:
        print("listening", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
