#!/usr/bin/env python3
"""A real SMTP server for the end-to-end tests (aiosmtpd), on a loopback port.

Usage: smtp_sink.py --port PORT --dir DIR [--host 127.0.0.1]

* Every accepted message is written to DIR as ``<n>.eml`` (the raw DATA, byte for byte) and,
  once that file is complete, ``<n>.json`` (``mail_from``, ``rcpt_tos``, ``eml``). Readers list
  ``*.json`` only, so they never see half-written mail.
* Recipients whose local part starts with ``reject`` get ``550 5.1.1 mailbox unavailable``.
* Every RCPT attempt (accepted or rejected) is appended to ``DIR/rcpt.log`` as one JSON line, so
  a test can count delivery attempts (e.g. to assert there is no retry storm after a 550).
* Prints ``READY <port>`` on stdout once it listens; stops on SIGTERM/SIGINT (or SIGKILL), and
  with ``--exit-on-stdin-eof`` when its stdin closes.

Needs: ``pip install aiosmtpd``.
"""

import argparse
import itertools
import json
import os
import signal
import sys
import threading
import time

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover - reported to the test, which fails with this text
    sys.stderr.write("smtp_sink: the Python package aiosmtpd is missing: pip install aiosmtpd\n")
    sys.exit(3)


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def _log_rcpt(self, address, outcome):
        line = json.dumps({"time": time.time(), "rcpt": address, "outcome": outcome})
        with self.lock:
            with open(os.path.join(self.directory, "rcpt.log"), "a", encoding="utf-8") as log:
                log.write(line + "\n")
                log.flush()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.lower().startswith("reject"):
            self._log_rcpt(address, "rejected")
            return "550 5.1.1 mailbox unavailable"
        self._log_rcpt(address, "accepted")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            name = "%020d-%06d-%04d" % (time.time_ns(), os.getpid(), next(self.counter))
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        eml = os.path.join(self.directory, name + ".eml")
        meta = os.path.join(self.directory, name + ".json")
        with open(eml + ".tmp", "wb") as out:
            out.write(raw)
        os.replace(eml + ".tmp", eml)
        with open(meta + ".tmp", "w", encoding="utf-8") as out:
            json.dump(
                {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "eml": name + ".eml"},
                out,
            )
        os.replace(meta + ".tmp", meta)
        return "250 2.0.0 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (the test holds the pipe, so a dead test leaves no sink behind)",
    )
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    controller = Controller(
        Sink(args.dir),
        hostname=args.host,
        port=args.port,
        enable_SMTPUTF8=True,
        data_size_limit=10 * 1024 * 1024,
    )
    controller.start()
    print("READY %d" % args.port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.exit_on_stdin_eof:

        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
