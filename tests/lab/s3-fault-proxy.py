#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A fault-injecting HTTP proxy on loopback, in front of an S3 gateway, for the S3 tests.

    s3-fault-proxy.py --upstream http://127.0.0.1:PORT --port-file FILE [--fault-rate 0.1]
                      [--faults 503,reset,delay] [--seed N] [--max-delay 2.0]
                      [--log FILE] [--stats FILE] [--lifetime 3600]

Listens on 127.0.0.1 (a free port, written to --port-file once it listens) and forwards each
request unchanged (the Host header too: the client's SigV4 signature names it, and the gateway
checks the signature against what it receives). A share --fault-rate of the requests, drawn
with a seeded generator, meets one fault, the kinds taken in turn:
  503    answered "503 SlowDown" with S3's XML error body; the request never reaches the gateway
  reset  the connection is reset (RST): before the request is forwarded, or, for a GET whose
         answer has a body, in the middle of the body (the client must check lengths)
  delay  forwarded after a pause of 0.2 s .. --max-delay
Everything is bounded: connections (128 at once), request bodies (1 GiB), and the proxy's
life (--lifetime seconds, then it exits by itself). It counts what it did: --stats FILE holds
{"requests", "forwarded", "503", "reset", "delay", "by_method": {...}} rewritten after each
request, and --log FILE gets one line per request: "ARRIVAL_UNIXTIME METHOD PATH STATUS FAULT".
"""
import argparse
import http.client
import http.server
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "expect", "content-length"}
MAX_BODY = 1 << 30
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate (s3-fault-proxy).</Message></Error>')


class State:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.kinds = [k for k in args.faults.split(",") if k]
        self.next_kind = 0
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "forwarded": 0, "503": 0, "reset": 0, "delay": 0,
                      "by_method": {}}

    def draw(self, method):
        """Counts the request and returns the fault it meets, or None."""
        with self.lock:
            self.stats["requests"] += 1
            self.stats["by_method"][method] = self.stats["by_method"].get(method, 0) + 1
            if not self.kinds or self.rng.random() >= self.args.fault_rate:
                return None
            kind = self.kinds[self.next_kind % len(self.kinds)]
            self.next_kind += 1
            self.stats[kind] += 1
            return kind

    def record(self, method, path, status, fault, arrived):
        with self.lock:
            if status:
                self.stats["forwarded"] += fault != "503"
            if self.args.log:
                with open(self.args.log, "a") as f:
                    f.write(f"{arrived:.3f} {method} {path} {status or '-'} {fault or '-'}\n")
            if self.args.stats:
                tmp = self.args.stats + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.stats, f)
                os.replace(tmp, self.args.stats)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for curl's large PUTs
    state = None  # set in main
    upstream = None  # (host, port)

    def log_message(self, fmt, *a):  # the --log file says what matters, quietly
        pass

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(10)
        n = int(self.headers.get("Content-Length", "0") or "0")
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def reset(self):
        """Closes the connection with an RST (SO_LINGER 0), as a crashed peer would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.wfile.flush()
        except OSError:
            pass
        self.connection.close()
        self.close_connection = True

    @staticmethod
    def still_open(conn):
        """True for a kept-alive upstream connection the gateway has not closed while idle."""
        if conn.sock is None:
            return False
        try:
            readable, _, _ = select.select([conn.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable  # an idle connection with something to read is closed (EOF)

    def forward(self, body):
        # Never sent twice: once a byte of the request has gone upstream, the gateway may have
        # acted on it (a conditional PUT repeated would meet itself and answer 412), so an
        # error then is the client's to retry (it gets a reset). A kept-alive connection the
        # gateway closed while idle is replaced before anything is sent on it.
        conn, self.upstream_conn = getattr(self, "upstream_conn", None), None
        if conn is not None and not self.still_open(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()  # for a HEAD: b"", and the connection is free again
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        self.upstream_conn = conn
        return resp, data

    def finish(self):
        super().finish()
        conn = getattr(self, "upstream_conn", None)
        if conn is not None:
            conn.close()

    def proxy(self):
        method, path, arrived = self.command, self.path, time.time()
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.state.record(method, path, 0, "bad-request", arrived)
            self.reset()
            return
        fault = self.state.draw(method)
        if fault == "503":
            self.send_response_only(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(SLOWDOWN)
            self.state.record(method, path, 503, fault, arrived)
            return
        if fault == "reset" and method != "GET":
            self.state.record(method, path, 0, fault, arrived)
            self.reset()
            return
        if fault == "delay":
            time.sleep(self.state.rng.uniform(0.2, max(0.2, self.state.args.max_delay)))
        try:
            resp, data = self.forward(body)
        except (OSError, http.client.HTTPException):
            self.state.record(method, path, 0, "upstream-error", arrived)
            self.reset()
            return
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP or (method == "HEAD" and k.lower() == "content-length"):
                self.send_header(k, v)
        if method != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "reset" and data:  # a GET cut in the middle of its body
            self.wfile.write(data[: len(data) // 2])
            self.state.record(method, path, resp.status, fault, arrived)
            self.reset()
            return
        if data:
            self.wfile.write(data)
        self.state.record(method, path, resp.status, fault, arrived)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = proxy


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    slots = threading.BoundedSemaphore(128)

    def process_request(self, request, client_address):
        if not self.slots.acquire(timeout=30):
            request.close()
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--port-file", required=True)
    p.add_argument("--fault-rate", type=float, default=0.1)
    p.add_argument("--faults", default="503,reset,delay")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--max-delay", type=float, default=2.0)
    p.add_argument("--log", default="")
    p.add_argument("--stats", default="")
    p.add_argument("--lifetime", type=float, default=3600)
    args = p.parse_args()
    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname:
        sys.exit("s3-fault-proxy: --upstream must be http://HOST:PORT")
    for k in args.faults.split(","):
        if k and k not in ("503", "reset", "delay"):
            sys.exit(f"s3-fault-proxy: unknown fault {k!r} (503, reset, delay)")
    if not 0 <= args.fault_rate <= 1:
        sys.exit("s3-fault-proxy: --fault-rate must be within 0..1")
    Handler.state = State(args)
    Handler.upstream = (up.hostname, up.port or 80)
    server = Server(("127.0.0.1", 0), Handler)
    timer = threading.Timer(args.lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
