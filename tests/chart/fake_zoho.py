"""A local stand-in for Zoho Accounts, Desk and CRM that answers like them (see the project's
notes on Zoho's APIs): an OAuth token whose `api_domain` is this server, tickets, threads and
departments from Desk, 204 for a CRM search without matches, Zoho's error bodies. A test switches
it to failing (500) or slow answers, or revokes the refresh token: the access token is then
refused with Desk's 401 `INVALID_OAUTH`, and a refresh answered `{"error": "invalid_code"}` with
HTTP 200, as Zoho Accounts does."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEPARTMENTS = [{"id": "1892000000006907", "name": "DOC"}]


class FakeZoho:
    def __init__(self):
        self.mode = "healthy"  # healthy | failing | slow | revoked
        self.slow_seconds = 3.0
        self.calls: list[str] = []
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeZoho
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        self.fake.calls.append(f"{method} {path}")
        if method == "POST" and path == "/oauth/v2/token":
            if self.fake.mode == "revoked":
                return self._json(200, {"error": "invalid_code"})
            return self._json(200, {"access_token": "1000.fake-access-token", "expires_in": 3600,
                                    "api_domain": self.fake.url, "token_type": "Bearer"})
        if self.fake.mode == "revoked":
            return self._json(401, {"errorCode": "INVALID_OAUTH",
                                    "message": "The OAuth Token you provided is invalid."})
        if self.fake.mode == "slow":
            time.sleep(self.fake.slow_seconds)
        elif self.fake.mode == "failing":
            return self._json(500, {"errorCode": "INTERNAL_SERVER_ERROR",
                                    "message": "An internal server error occurred."})
        ticket = re.fullmatch(r"/api/v1/tickets/(\d+)", path)
        if method == "GET" and ticket:
            return self._json(200, {
                "id": ticket.group(1), "ticketNumber": "101", "subject": "Question sur ma facture",
                "status": "Open", "statusType": "Open", "departmentId": DEPARTMENTS[0]["id"],
                "email": "client@example.fr", "cf": {}, "description": "Bonjour",
                "modifiedTime": "2024-05-01T10:00:00.000Z"})
        if method == "GET" and re.fullmatch(r"/api/v1/tickets/\d+/threads", path):
            return self._json(200, {"data": []})
        if method == "GET" and path == "/api/v1/departments":
            return self._json(200, {"data": DEPARTMENTS})
        if method == "GET" and re.fullmatch(r"/crm/v\d+/(Deals|Contacts)/search", path):
            return self._empty(204)
        return self._json(404, {"errorCode": "URL_NOT_FOUND", "message": "The URL is invalid."})

    def _json(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass
