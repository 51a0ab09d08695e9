"""A stand-in for the profiling back ends `leakprobe push` and `watch` talk
to, for tests: no Pyroscope or Parca server can be installed here (none is
packaged in Debian, PyPI, npm or crates.io). It implements the documented
request formats strictly and rejects anything else, and records what it
accepted:

- Pyroscope Push API (grafana/pyroscope api/push/v1/push.proto,
  docs/sources/reference-server-api/index.md): `POST /push.v1.PusherService/Push`,
  Connect unary over HTTP/1.1 with JSON: `{"series": [{"labels": [{"name",
  "value"}], "samples": [{"ID", "rawProfile"}]}]}`, labels checked as the
  distributor's ValidateLabels does (`__name__` a metric name, `service_name`
  set, legal names, no duplicates). Errors as Connect's `{"code", "message"}`.
- Pyroscope `/ingest` (docs/sources/configure-server/about-server-api.md;
  api/model/labelset for `name`): `POST /ingest?name=APP{k=v}&from=&until=&format=pprof`
  with the gzipped pprof as the body.
- Parca WriteRaw through its HTTP/JSON gateway (parca-dev/parca
  proto/parca/profilestore/v1alpha1/profilestore.proto, `post:
  "/profiles/writeraw"` under pkg/server's `/api`): `{"series": [{"labels":
  {"labels": [...]}, "samples": [{"rawProfile"}]}], "normalized"}`, with
  `__name__` required (pkg/normalizer).

Every profile must be base64 (JSON APIs) of a gzipped, well-formed
profile.proto. Run alone (`python3 tests/python/standin.py`) it serves on a
random port of 127.0.0.1 and prints what arrives."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUSH = "/push.v1.PusherService/Push"
INGEST = "/ingest"
PARCA = "/api/profiles/writeraw"
BODY_CAP = 16 << 20
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# api/model/labelset/validate.go
INGEST_LABEL = re.compile(r"[A-Za-z0-9_.]+")
INGEST_SERVICE = re.compile(r"[A-Za-z0-9_./-]+")
INGEST_PARAMS = {"name", "from", "until", "format", "sampleRate", "spyName", "units", "aggregationType"}


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Received:
    api: str  # "push", "ingest", "parca"
    labels: dict[str, str]
    profile: bytes  # gzipped profile.proto, as sent
    headers: dict[str, str]  # names in lower case
    time: float = field(default_factory=time.monotonic)


def varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise Rejected(400, "invalid_argument", "truncated varint in the profile")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            return value, i


def check_pprof(gzipped: bytes) -> None:
    """A gzipped profile.proto: every field well formed, strings valid UTF-8
    (proto3's rule for `string`; the servers' vtprotobuf decoders do not check
    it, google.golang.org/protobuf does), the string table starting with "",
    at least one sample type."""
    try:
        data = gzip.decompress(gzipped)
    except (OSError, EOFError) as e:
        raise Rejected(400, "invalid_argument", f"profile is not gzipped: {e}") from None
    i, strings, types = 0, [], 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(data, i)
        elif wire == 2:
            size, i = varint(data, i)
            if i + size > len(data):
                raise Rejected(400, "invalid_argument", "a field overruns the profile")
            if number == 6:
                try:
                    strings.append(data[i : i + size].decode("utf-8"))
                except UnicodeDecodeError:
                    raise Rejected(400, "invalid_argument", "a string is not UTF-8") from None
            types += number == 1
            i += size
        else:
            raise Rejected(400, "invalid_argument", f"wire type {wire} in a profile.proto")
    if not strings or strings[0] != "" or not types:
        raise Rejected(400, "invalid_argument", "not a profile.proto (string table or sample types missing)")


def only(obj: object, keys: set[str], what: str) -> dict:
    if not isinstance(obj, dict):
        raise Rejected(400, "invalid_argument", f"{what} is not an object")
    extra = set(obj) - keys
    if extra:
        raise Rejected(400, "invalid_argument", f"{what}: unknown field {sorted(extra)[0]!r}")
    return obj


def label_pairs(pairs: object, what: str) -> dict[str, str]:
    if not isinstance(pairs, list):
        raise Rejected(400, "invalid_argument", f"{what} is not a list")
    out: dict[str, str] = {}
    for pair in pairs:
        p = only(pair, {"name", "value"}, what)
        name, value = p.get("name", ""), p.get("value", "")
        if not isinstance(name, str) or not isinstance(value, str):
            raise Rejected(400, "invalid_argument", f"{what}: name and value are strings")
        if name != "__name__" and not LABEL_NAME.fullmatch(name):
            raise Rejected(400, "invalid_argument", f"invalid label name {name!r}")
        if name in out:
            raise Rejected(400, "invalid_argument", f"duplicate label name {name!r}")
        out[name] = value
    if not METRIC_NAME.fullmatch(out.get("__name__", "")):
        raise Rejected(400, "invalid_argument", "missing or invalid __name__ label")
    return out


def raw_profile(text: object) -> bytes:
    if not isinstance(text, str):
        raise Rejected(400, "invalid_argument", "rawProfile is not a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise Rejected(400, "invalid_argument", "rawProfile is not base64") from None
    check_pprof(data)
    return data


class StandIn:
    """The server, on 127.0.0.1 at a random port (kept across stop/start).
    `fault`, if set, answers every request instead: ("status", code, body[,
    headers]) or ("delay", seconds)."""

    def __init__(
        self,
        user: str | None = None,
        password: str | None = None,
        tenant: str | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """Basic auth and an X-Scope-OrgID required if given; HTTPS with
        `tls` (certificate file, key file)."""
        self.received: list[Received] = []
        self.rejected: list[str] = []
        self.faulted = 0  # requests answered by `fault`
        self.changed = threading.Condition()
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        self.tenant = tenant
        self.fault: tuple | None = None
        self.tls = tls
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                standin.handle(self)

            def do_GET(self) -> None:
                standin.answer(self, 405, "application/json", b'{"code":"unimplemented","message":"POST only"}')

            do_PUT = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: connections are refused until `start`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """The profiles received once there are `count` (or at the timeout)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def wait_faulted(self, count: int, timeout: float) -> bool:
        """Whether `count` requests were answered by `fault` within the timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: self.faulted >= count, timeout)

    def answer(self, h: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (its timeout)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        api = {PUSH: "push", INGEST: "ingest", PARCA: "parca"}.get(url.path)
        try:
            if self.fault and self.fault[0] == "delay":
                time.sleep(self.fault[1])
            if self.fault and self.fault[0] == "status":
                _, status, body, *headers = self.fault
                with self.changed:
                    self.faulted += 1
                    self.changed.notify_all()
                return self.answer(h, status, "text/plain", body, *headers)
            if api is None:
                raise Rejected(404, "not_found", f"no such endpoint {url.path}")
            if self.auth and h.headers.get("Authorization") != self.auth:
                raise Rejected(401, "unauthenticated", "basic auth required")
            if self.tenant and h.headers.get("X-Scope-OrgID") != self.tenant:
                raise Rejected(401, "unauthenticated", "no org id")
            size = h.headers.get("Content-Length")
            if size is None or not size.isdigit() or int(size) > BODY_CAP:
                raise Rejected(411, "invalid_argument", "Content-Length required, at most 16 MiB")
            body = h.rfile.read(int(size))
            labels, profiles = getattr(self, api)(h, url, body)
        except Rejected as e:
            with self.changed:
                self.rejected.append(str(e))
                self.changed.notify_all()
            payload = json.dumps({"code": e.code, "message": str(e)}).encode()
            return self.answer(h, e.status, "application/json", payload)
        with self.changed:
            for p in profiles:
                self.received.append(Received(api, labels, p, {k.lower(): v for k, v in h.headers.items()}))
            self.changed.notify_all()
        if api == "ingest":
            return self.answer(h, 200, "text/plain", b"")
        self.answer(h, 200, "application/json", b"{}")

    @staticmethod
    def json_body(h: BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> object:
        if url.query:
            raise Rejected(400, "invalid_argument", "no query string on this endpoint")
        if h.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise Rejected(415, "invalid_argument", "Content-Type must be application/json")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "invalid_argument", "body is not JSON") from None

    def push(self, h: BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> tuple[dict, list]:
        if h.headers.get("Connect-Protocol-Version", "1") != "1":
            raise Rejected(400, "invalid_argument", "Connect-Protocol-Version must be 1")
        request = only(self.json_body(h, url, body), {"series"}, "PushRequest")
        series = request.get("series")
        if not isinstance(series, list) or len(series) != 1:
            raise Rejected(400, "invalid_argument", "this stand-in takes exactly one series per request")
        s = only(series[0], {"labels", "samples", "annotations"}, "RawProfileSeries")
        labels = label_pairs(s.get("labels"), "labels")
        if not labels.get("service_name"):
            raise Rejected(400, "invalid_argument", "service name is not provided")
        samples = s.get("samples")
        if not isinstance(samples, list) or not samples:
            raise Rejected(400, "invalid_argument", "no samples")
        profiles = []
        for sample in samples:
            sample = only(sample, {"ID", "rawProfile"}, "RawSample")
            if not isinstance(sample.get("ID", ""), str):
                raise Rejected(400, "invalid_argument", "ID is a string")
            profiles.append(raw_profile(sample.get("rawProfile")))
        return labels, profiles

    def parca(self, h: BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> tuple[dict, list]:
        request = only(self.json_body(h, url, body), {"tenant", "series", "normalized"}, "WriteRawRequest")
        if not isinstance(request.get("normalized", False), bool):
            raise Rejected(400, "invalid_argument", "normalized is a bool")
        series = request.get("series")
        if not isinstance(series, list) or len(series) != 1:
            raise Rejected(400, "invalid_argument", "this stand-in takes exactly one series per request")
        s = only(series[0], {"labels", "samples"}, "RawProfileSeries")
        labels = label_pairs(only(s.get("labels"), {"labels"}, "LabelSet").get("labels"), "labels")
        samples = s.get("samples")
        if not isinstance(samples, list) or not samples:
            raise Rejected(400, "invalid_argument", "no samples")
        keys = {"rawProfile", "raw_profile", "executableInfo", "executable_info"}
        profiles = [raw_profile(only(x, keys, "RawSample").get("rawProfile", x.get("raw_profile"))) for x in samples]
        return labels, profiles

    def ingest(self, h: BaseHTTPRequestHandler, url: urllib.parse.SplitResult, body: bytes) -> tuple[dict, list]:
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=True)
        if set(query) - INGEST_PARAMS or any(len(v) != 1 for v in query.values()):
            raise Rejected(400, "invalid_argument", f"unknown or repeated parameters in {url.query}")
        q = {k: v[0] for k, v in query.items()}
        if q.get("format") != "pprof":
            raise Rejected(400, "invalid_argument", "this stand-in takes format=pprof only")
        for key in ("from", "until"):
            if key in q and not q[key].isdigit():
                raise Rejected(400, "invalid_argument", f"{key} is not a Unix time")
        if "multipart/form-data" in h.headers.get("Content-Type", ""):
            raise Rejected(400, "invalid_argument", "this stand-in takes the raw profile as the body")
        labels = self.label_set(q.get("name", ""))
        if not body:
            raise Rejected(400, "invalid_argument", "empty body")
        check_pprof(body)
        return labels, [body]

    @staticmethod
    def label_set(name: str) -> dict[str, str]:
        """labelset.Parse: APP{k=v,...}, no quoting; APP becomes service_name."""
        service, brace, rest = name.partition("{")
        service = service.strip()
        if not INGEST_SERVICE.fullmatch(service):
            raise Rejected(400, "invalid_argument", f"name: invalid service name {service!r}")
        labels = {"service_name": service}
        if brace:
            if not rest.endswith("}") or "}" in rest[:-1]:
                raise Rejected(400, "invalid_argument", "name: the label set does not end with its only }")
            for pair in filter(None, rest[:-1].split(",")):
                key, eq, value = pair.partition("=")
                if not eq or not INGEST_LABEL.fullmatch(key.strip()) or key.strip() == "__name__":
                    raise Rejected(400, "invalid_argument", f"name: invalid label {pair!r}")
                labels[key.strip()] = value.strip()
        return labels


if __name__ == "__main__":
    s = StandIn()
    print(f"stand-in at {s.url} ({PUSH}, {INGEST}, {PARCA})", flush=True)
    seen = 0
    while True:
        got = s.wait_for(seen + 1, 3600)
        for r in got[seen:]:
            print(f"{r.api}: {len(r.profile)} bytes, labels {r.labels}", flush=True)
        seen = len(got)
