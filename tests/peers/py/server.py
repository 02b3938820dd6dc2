"""py-echo-server: an independent WebSocket echo server (Python `websockets`,
sync API) used as a peer by wsecho's interop tests (tests/interop.rs).

Usage: server.py PORT [HOST]   (HOST defaults to 127.0.0.1)

Serves WebSocket at /echo (other paths get 404) and echoes every message back
with the same type (text stays text, binary stays binary). Prints "listening"
once ready, and "client close code N" (or "none") when a connection ends.
/closeNNNN (e.g. /close4001) echoes one message, then closes with code NNNN.
"""

import http
import re
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

CLOSE_PATH = re.compile(r"/close(\d{4})")


def echo(ws):
    close = CLOSE_PATH.fullmatch(ws.request.path)
    try:
        while True:
            msg = ws.recv()  # str for text, bytes for binary
            ws.send(msg)
            if close:
                ws.close(int(close.group(1)))
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else "none"
        print(f"client close code {code}", flush=True)


def only_echo_path(connection, request):
    if request.path != "/echo" and not CLOSE_PATH.fullmatch(request.path):
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
