#!/usr/bin/env python3
"""The right-now backend: push a message to everyone every second, through iorelay's
server API (POST /api/v1/emit on the admin listener, with a bearer token).

This is all that is left of the seed's server code (its setInterval): connections,
the welcome and the users' messages are the relay's, as iorelay.toml says. Python
standard library only.

    python3 examples/right-now/backend.py                # the example's defaults
    python3 examples/right-now/backend.py --admin http://127.0.0.1:9090 --interval 1

The admin address and token also come from IORELAY_ADMIN and IORELAY_TOKEN. Each push is
one `message` event, {"user": "turingbot", "text": "It is 14:03:07 UTC right now.",
"now": <ms since the epoch>, "n": <push number>}, to the namespace "/". A failed push
(relay down, bad token) is logged and the next one tried on schedule; SIGTERM or
Ctrl-C stops it.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

DEFAULT_ADMIN = "http://127.0.0.1:9090"
# The example's well-known token (iorelay.toml, [api] tokens).
DEFAULT_TOKEN = "right-now-example-token"


def emit(admin, token, namespace, event, args, timeout):
    """POST one event to every socket of `namespace`; the number of recipients."""
    body = json.dumps({"namespace": namespace, "event": event, "args": args}).encode()
    request = urllib.request.Request(
        admin.rstrip("/") + "/api/v1/emit",
        data=body,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response).get("recipients", 0)


def describe(error):
    """A one-line reason for a failed push, with the relay's own error when it gave one."""
    if isinstance(error, urllib.error.HTTPError):
        try:
            detail = json.load(error).get("error", "")
        except (ValueError, OSError):
            detail = ""
        return f"HTTP {error.code} {detail}".strip()
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", default=os.environ.get("IORELAY_ADMIN", DEFAULT_ADMIN),
                        help="the relay's admin listener (default: $IORELAY_ADMIN or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("IORELAY_TOKEN", DEFAULT_TOKEN),
                        help="a server API token (default: $IORELAY_TOKEN or the example's)")
    parser.add_argument("--namespace", default="/", help="where to push (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes (default: 1)")
    options = parser.parse_args()
    if options.interval <= 0:
        parser.error("--interval must be positive")

    # SIGTERM ends the loop like Ctrl-C does: no traceback, exit status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"backend: pushing to {options.admin} every {options.interval:g}s", file=sys.stderr, flush=True)

    failing = False
    n = 0
    # A fixed schedule (not "sleep after each push"), so that slow answers do not drift it.
    due = time.monotonic()
    try:
        while True:
            n += 1
            now = time.time()
            text = time.strftime("It is %H:%M:%S UTC right now.", time.gmtime(now))
            message = {"user": "turingbot", "text": text, "now": int(now * 1000), "n": n}
            try:
                recipients = emit(options.admin, options.token, options.namespace, "message", [message],
                                  timeout=max(options.interval, 1.0))
                if failing or n == 1:
                    print(f"backend: push {n} reached {recipients} sockets", file=sys.stderr, flush=True)
                failing = False
            except (urllib.error.URLError, OSError, ValueError) as error:
                # Logged once per outage, not once a second.
                if not failing:
                    print(f"backend: push {n} failed: {describe(error)}", file=sys.stderr, flush=True)
                failing = True
            due += options.interval
            time.sleep(max(0.0, due - time.monotonic()))
            # After a long stall (a suspended laptop), start afresh instead of bursting.
            if time.monotonic() - due > options.interval:
                due = time.monotonic()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
