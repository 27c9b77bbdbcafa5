"""A webhook receiver for the integration tests, verifying with the `standardwebhooks` package.

Usage: webhook_receiver.py CONTROL_JSON LOG_JSONL

Prints its port on the first line of stdout. Re-reads CONTROL_JSON on every request:
  {"secrets": ["whsec_..."], "fail_first": N, "busy_first": N, "retry_after": S,
   "dead_ok": false}
Paths:
  /ok    answers 503 to the first `fail_first` attempts of each webhook-id, then verifies
         and processes idempotently (200);
  /busy  answers 429 with Retry-After `retry_after` to the first `busy_first` attempts of
         each webhook-id, then like /ok;
  /gone  answers 410;
  /slow  sleeps 20 s before answering;
  /dead  answers 503 until `dead_ok` is true, then like /ok.
Each request is appended to LOG_JSONL: path, webhook-id, time received, attempt number for
that id, the event's time (its body's `timestamp`), which secrets verified the signature, the
answer, and whether it was processed (first time that id was accepted).
"""

import json
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

CONTROL, LOG = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
ATTEMPTS = {}
PROCESSED = set()


def control():
    try:
        with open(CONTROL) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received = time.time()
        ctl = control()
        msg_id = self.headers.get("webhook-id", "")
        path = self.path
        if path == "/slow":
            time.sleep(20)
        with LOCK:
            key = (path, msg_id)
            ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
            attempt = ATTEMPTS[key]
        headers = {k: v for k, v in self.headers.items()}
        verified = []
        for i, secret in enumerate(ctl.get("secrets", [])):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(i)
            except WebhookVerificationError:
                pass
        status, extra, processed = 200, [], False
        if path == "/gone":
            status = 410
        elif path == "/ok" and attempt <= ctl.get("fail_first", 0):
            status = 503
        elif path == "/busy" and attempt <= ctl.get("busy_first", 0):
            status, extra = 429, [("Retry-After", str(ctl.get("retry_after", 1)))]
        elif path == "/dead" and not ctl.get("dead_ok", False):
            status = 503
        elif not verified:
            status = 401
        else:
            with LOCK:
                processed = (path, msg_id) not in PROCESSED
                PROCESSED.add((path, msg_id))
        event = json.loads(body or b"{}")
        record = {
            "path": path,
            "id": msg_id,
            "received": received,
            "attempt": attempt,
            "signatures": len(headers.get("webhook-signature", "").split(" ")),
            "verified": verified,
            "status": status,
            "processed": processed,
            "type": event.get("type"),
            "event_time": datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if "timestamp" in event
            else None,
        }
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.answer(status, extra)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
