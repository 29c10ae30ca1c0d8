"""The mailer figure of `bench/run`: confirmation mails per second to a local SMTP sink.

How it is measured, so the figure is the mailer's alone:

1. `newsletter api` (no mailer) on a fresh SQLite data dir takes N signups (unique addresses)
   over HTTP; it is stopped before any mail is sent.
2. The SMTP sink (`tests/support/smtp_sink.py`, aiosmtpd, writing every message to a file) starts
   on loopback. Its own capacity is the baseline: a raw `smtplib` client sending N messages of
   the same size over 4 connections (the mailer's pool size) in the same run.
3. `newsletter mailer` starts with `NEWSLETTER_SMTP_URL` pointing at the sink; the clock runs from
   its start until the sink holds one confirmation mail for each of the N addresses (bounded by
   a timeout). "None lost": the set of recipients must equal the set of signed-up addresses.
"""

import concurrent.futures
import json
import os
import smtplib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

SINK = Path(__file__).resolve().parent.parent / "tests" / "support" / "smtp_sink.py"


def _post_signup(base, email):
    body = urllib.parse.urlencode({"email": email, "name": "Bench Reader"}).encode()
    request = urllib.request.Request(
        base + "/v1/subscriptions",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status not in (200, 202, 303):
            raise RuntimeError(f"signup answered {response.status}")


def _ensure_aiosmtpd():
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "aiosmtpd>=1.4"], check=True)


def _start_sink(bench, directory):
    _ensure_aiosmtpd()
    directory.mkdir(parents=True, exist_ok=True)
    port = bench.free_port()
    process = subprocess.Popen(
        [sys.executable, str(SINK), "--port", str(port), "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=open(directory / "sink.stderr", "wb"),
    )
    bench.CHILDREN.append(process)
    line = process.stdout.readline().decode()
    if not line.startswith("READY"):
        raise SystemExit(f"the SMTP sink did not start: {line!r}")
    return process, port


def _read_new_recipients(directory, seen):
    """Adds the recipients of `*.json` files not read yet to `seen` (path -> recipients) and
    returns every recipient so far. Only new files are parsed: re-reading all of them on every
    poll cost the shared cores more CPU the further the run got."""
    for path in directory.glob("*.json"):
        if path not in seen:
            seen[path] = json.loads(path.read_text())["rcpt_tos"]
    return [rcpt for rcpts in seen.values() for rcpt in rcpts]


def _sink_capacity(port, count, size):
    """Messages/s the sink accepts from a raw smtplib client over 4 connections."""
    line = "x" * 76 + "\r\n"
    body = ("Subject: baseline\r\n\r\n" + line * (size // len(line))).encode()
    per_connection = count // 4

    def send(worker):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for n in range(per_connection):
                client.sendmail("bench@example.com", [f"baseline-{worker}-{n}@bench.example.com"], body)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(4)))
    return per_connection * 4 / (time.perf_counter() - started)


def measure(bench, mails, timeout=300):
    """Returns (mails/s of the mailer, sink capacity in messages/s, lost count)."""
    work = bench.WORK / "mail"
    data = work / "data"
    port = bench.free_port()
    env = dict(
        os.environ,
        NEWSLETTER_LISTEN=f"127.0.0.1:{port}",
        NEWSLETTER_DATA_DIR=str(data),
        NEWSLETTER_TOKENS=bench.TOKEN,
        NEWSLETTER_SIGNUP_RATE_LIMIT="0",
        NEWSLETTER_LOG="warn",
    )
    binary = str(bench.NEWSLETTER)
    api = bench.start([binary, "api"], env=env, name="mail-api")
    base = f"http://127.0.0.1:{port}"
    bench.wait_http(base + "/health/ready")
    addresses = [f"mail-{n}@bench.example.com" for n in range(mails)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda email: _post_signup(base, email), addresses))
    bench.stop(api)

    sink_dir = work / "sink"
    sink, sink_port = _start_sink(bench, sink_dir)
    # About the size of a confirmation mail (multipart, Danish and English).
    capacity = _sink_capacity(sink_port, min(mails, 2000), 4000)
    for path in list(sink_dir.glob("*.json")) + list(sink_dir.glob("*.eml")):
        path.unlink()

    mailer_env = dict(env, NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{sink_port}")
    mailer_env.pop("NEWSLETTER_LISTEN")
    started = time.perf_counter()
    mailer = bench.start([binary, "mailer"], env=mailer_env, name="mailer")
    wanted = set(addresses)
    deadline = started + timeout
    received, seen = [], {}
    while time.perf_counter() < deadline:
        received = _read_new_recipients(sink_dir, seen)
        if wanted <= set(received):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    bench.stop(mailer)
    bench.stop(sink)
    lost = len(wanted - set(received))
    return len(wanted & set(received)) / elapsed, capacity, lost
