#!/usr/bin/env python3
"""The stream-search backend (seed 004) for iorelay, standard library only.

The seed's Node server opened a Twitter stream per search term and wrote each tweet to
the socket that asked. Here the relay owns the sockets and the rooms (one room per term,
examples/stream/iorelay.toml); this process only

- learns which terms have watchers from the relay's webhooks: `room.occupied` starts a
  term, `room.vacated` stops it (each batch's HMAC-SHA256 signature is checked first);
- pushes generated items (no outside network: names and phrases from the lists below)
  into the rooms of watched terms, and only those, with `POST /api/v1/emit`;
- asks the relay for the rooms that have watchers (`GET /api/v1/rooms`) when it starts
  and every --resync seconds, so that it catches up after its own restart or a webhook
  batch the relay had to drop.

Run (from the repository root, with the relay running examples/stream/iorelay.toml):

    python3 examples/stream/backend.py [--listen 127.0.0.1:8081] [--api http://127.0.0.1:9090]
        [--interval 1.0] [--resync 30]

Environment: IORELAY_TOKEN (the server API token; default the example's development
token), STREAM_WEBHOOK_SECRET (the webhook secret; default the example's). GET /status
answers what it is doing: {"terms": [...], "pushed": {term: n}, "ticks": n}.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import secrets
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMESPACE = "/stream"
EVENT = "item"
DEFAULT_TOKEN = "iorelay-development-token"
DEFAULT_SECRET = "stream-example-webhook-secret-change-me"
# A webhook batch is at most `batch` (100) small events: anything much larger is not one.
MAX_BODY = 256 * 1024
# A signed batch older or newer than this is refused (a replayed capture).
MAX_SKEW_S = 300

FIRST = ["Ada", "Grace", "Linus", "Ken", "Barbara", "Edsger", "Margaret", "Dennis",
         "Frances", "Alan", "Radia", "Guido", "Yukihiro", "Anita", "Bjarne", "Sophie"]
LAST = ["Park", "Lovelace", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Hamilton",
        "Ritchie", "Allen", "Kay", "Perlman", "Rossum", "Matsumoto", "Borg", "Wilson"]
PHRASES = [
    "Just shipped something with {t} and it went better than expected.",
    "Hot take: {t} is underrated.",
    "Reading the {t} release notes over coffee.",
    "Anyone at the {t} meetup tonight?",
    "Three things I wish I had known before starting with {t}.",
    "Our team moved to {t} last quarter. Ask me anything.",
    "The {t} community is the best part of it.",
    "Debugging a {t} issue at 2am again.",
    "New blog post: {t} in production, one year later.",
    "Is it just me, or is {t} everywhere this week?",
]


class Backend:
    """Which terms are watched, and what has been pushed; shared by the threads."""

    def __init__(self, api, token, secret):
        self.api = api.rstrip("/")
        self.token = token
        self.secret = secret.encode()
        self.lock = threading.Lock()
        self.terms = set()
        self.pushed = {}
        self.ticks = 0
        # Bumped by every webhook: a resync answer older than a webhook is not applied.
        self.version = 0
        self.boot = secrets.token_hex(3)
        self.seq = 0

    # -- the relay's server API ------------------------------------------------------

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.token,
            "Content-Type": "application/json",
        })
        with urllib.request.urlopen(req, timeout=5) as res:
            return json.load(res)

    def resync(self):
        """Take the watched terms from the relay's own list of rooms."""
        with self.lock:
            version = self.version
        reply = self.call("GET", "/api/v1/rooms?" + urllib.parse.urlencode({"namespace": NAMESPACE}))
        rooms = {r["room"] for r in reply.get("namespaces", {}).get(NAMESPACE, []) if r["count"] > 0}
        with self.lock:
            # A webhook that came in meanwhile is newer than this answer: keep its word.
            if self.version != version:
                return
            if rooms != self.terms:
                log(f"resync: watched terms {sorted(rooms)}")
            self.terms = rooms

    def item(self, term):
        self.seq += 1
        first, last = random.choice(FIRST), random.choice(LAST)
        return {
            "id": f"{self.boot}-{self.seq}",
            "seq": self.seq,
            "term": term,
            "name": f"{first} {last}",
            "screen_name": (first + last).lower(),
            "text": random.choice(PHRASES).format(t=term),
            "time": int(time.time() * 1000),
        }

    def tick(self):
        """One item into the room of every watched term."""
        with self.lock:
            terms = sorted(self.terms)
        for term in terms:
            body = {"namespace": NAMESPACE, "event": EVENT, "args": [self.item(term)], "rooms": [term]}
            try:
                self.call("POST", "/api/v1/emit", body)
            except (OSError, ValueError) as err:
                log(f"emit into {term!r} failed: {err}")
                continue
            with self.lock:
                self.pushed[term] = self.pushed.get(term, 0) + 1
        with self.lock:
            self.ticks += 1

    # -- webhooks --------------------------------------------------------------------

    def verify(self, timestamp, signature, body):
        """The README's rule: HMAC-SHA256 of "<timestamp>.<body>", compared in constant time."""
        try:
            skew = abs(time.time() - int(timestamp))
        except ValueError:
            return False
        if skew > MAX_SKEW_S:
            return False
        want = "sha256=" + hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want.encode(), signature.encode())

    def hooks(self, events):
        with self.lock:
            self.version += 1
            for e in events:
                if e.get("namespace") != NAMESPACE or not isinstance(e.get("room"), str):
                    continue
                if e.get("event") == "room.occupied":
                    if e["room"] not in self.terms:
                        log(f"term occupied: {e['room']}")
                    self.terms.add(e["room"])
                elif e.get("event") == "room.vacated":
                    if e["room"] in self.terms:
                        log(f"term vacated: {e['room']}")
                    self.terms.discard(e["room"])

    def status(self):
        with self.lock:
            return {"terms": sorted(self.terms), "pushed": dict(self.pushed), "ticks": self.ticks}


def log(line):
    print(line, flush=True)


def handler_for(backend):
    class Handler(BaseHTTPRequestHandler):
        server_version = "stream-backend"
        # A peer that stops sending mid-request does not hold its thread for ever.
        timeout = 10

        def answer(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/status":
                self.answer(200, backend.status())
            elif self.path == "/healthz":
                self.answer(200, {"ok": True})
            else:
                self.answer(404, {"ok": False, "error": "not found"})

        def do_POST(self):
            if self.path != "/hooks":
                return self.answer(404, {"ok": False, "error": "not found"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.answer(411, {"ok": False, "error": "length required"})
            if length < 0 or length > MAX_BODY:
                return self.answer(413, {"ok": False, "error": "too large"})
            body = self.rfile.read(length)
            ts = self.headers.get("X-Iorelay-Timestamp", "")
            sig = self.headers.get("X-Iorelay-Signature", "")
            if not backend.verify(ts, sig, body):
                log("webhook refused: bad signature or timestamp")
                return self.answer(401, {"ok": False, "error": "bad signature"})
            try:
                events = json.loads(body)["events"]
                if not isinstance(events, list):
                    raise ValueError("events is not a list")
            except (ValueError, KeyError, TypeError) as err:
                return self.answer(400, {"ok": False, "error": f"bad batch: {err}"})
            backend.hooks([e for e in events if isinstance(e, dict)])
            self.answer(200, {"ok": True})

        def log_message(self, fmt, *args):
            pass  # one line per webhook POST is noise; refusals are logged above

    return Handler


def every(seconds, stop, fn, what):
    """Call fn every `seconds` until `stop` is set; a failure is logged, not fatal."""
    while not stop.wait(seconds):
        try:
            fn()
        except Exception as err:  # the loop must outlive any one failure; it is logged
            log(f"{what} failed: {err!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:8081", help="webhook receiver address (port 0: any)")
    p.add_argument("--api", default="http://127.0.0.1:9090", help="the relay's admin listener")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between items of a term")
    p.add_argument("--resync", type=float, default=30.0, help="seconds between rooms resyncs")
    args = p.parse_args()

    backend = Backend(args.api, os.environ.get("IORELAY_TOKEN", DEFAULT_TOKEN),
                      os.environ.get("STREAM_WEBHOOK_SECRET", DEFAULT_SECRET))
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), handler_for(backend))
    server.daemon_threads = True
    try:
        backend.resync()
    except Exception as err:  # the periodic resync tries again
        log(f"resync failed (the relay is not up yet?): {err!r}")
    stop = threading.Event()
    threading.Thread(target=every, args=(args.interval, stop, backend.tick, "tick"), daemon=True).start()
    threading.Thread(target=every, args=(args.resync, stop, backend.resync, "resync"), daemon=True).start()
    log(f"stream backend listening on http://{host}:{server.server_address[1]} (api {args.api})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
