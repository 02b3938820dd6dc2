"""py-echo-server: an independent WebSocket echo server (Python `websockets`,
sync API) used as a peer by wsecho's interop tests (tests/interop.rs).

Usage: server.py PORT [HOST]   (HOST defaults to 127.0.0.1)

Serves WebSocket at /echo (other paths get 404) and echoes every message back
with the same type (text stays text, binary stays binary). Prints "listening"
once ready.
"""

import http
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve


def echo(ws):
    try:
        for msg in ws:  # str for text, bytes for binary
            ws.send(msg)
    except ConnectionClosed:
        pass


def only_echo_path(connection, request):
    if request.path != "/echo":
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    return None


def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    with serve(echo, host, port, process_request=only_echo_path,
               max_size=None, ping_interval=None) as server:
        print("listening", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
