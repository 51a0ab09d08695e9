"""`leakprobe push`: dumps sent, symbolized (the `pprof` export), to a
continuous-profiling back end, each as one profile of its own series.

Written against the back ends' published request formats (no server was run
here; tests/python/standin.py follows the same documents strictly):

- Grafana Pyroscope's Push API, `POST /push.v1.PusherService/Push`: Connect
  protocol, JSON (grafana/pyroscope api/push/v1/push.proto and
  docs/sources/reference-server-api): `{"series": [{"labels": [{"name",
  "value"}], "samples": [{"ID": uuid, "rawProfile": base64 gzipped pprof}]}]}`.
- Pyroscope's older `POST /ingest?name=SERVICE{k=v,...}&from=&until=&format=pprof`
  with the gzipped pprof as the body (docs/sources/configure-server/
  about-server-api.md; the label set's grammar is api/model/labelset: no
  quoting, so a value cannot hold `,` or `}`).
- Parca's `ProfileStoreService/WriteRaw` through its HTTP/JSON gateway, `POST
  /api/profiles/writeraw` (parca-dev/parca proto/parca/profilestore/v1alpha1
  `google.api.http` rule, mounted under `/api` by pkg/server): `{"series":
  [{"labels": {"labels": [...]}, "samples": [{"rawProfile": base64}]}],
  "normalized": false}` (addresses as the process saw them, with mappings).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

from . import argtypes
from .dumpfile import Dump, DumpError, read_dump, shown
from .pprof import encode_dumps
from .symbols import program_of

# Prometheus' legacy label names, which Pyroscope (after sanitizing dots) and
# Parca both accept; names starting with "__" are the back ends' own.
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What Pyroscope takes in a service name on /ingest (labelset.IsServiceNameRuneAllowed).
SERVICE_CHARS = re.compile(r"[^A-Za-z0-9_./-]")
# Pyroscope and Parca name heap profiles' series so (Go's heap profile).
PROFILE_NAME = "memory"
RESPONSE_CAP = 64 << 10
DEFAULT_TIMEOUT = 30.0
ENV_USER, ENV_PASSWORD, ENV_TENANT = "LEAKPROBE_PUSH_USER", "LEAKPROBE_PUSH_PASSWORD", "LEAKPROBE_PUSH_TENANT"


class PushError(Exception):
    """Why a profile was not accepted: one line, safe to print.
    `retry`: the server may take it later (down, overloaded, a proxy's
    error); otherwise this profile was refused as it is."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class Target:
    """Where and how profiles go."""

    kind: str  # "push", "ingest" or "parca"
    url: str  # the server's base URL, without a trailing slash
    timeout: float = DEFAULT_TIMEOUT
    headers: dict[str, str] = field(default_factory=dict)
    labels: list[tuple[str, str]] = field(default_factory=list)  # --label, in order
    service: str | None = None  # --name

    @property
    def endpoint(self) -> str:
        path = {"push": "/push.v1.PusherService/Push", "ingest": "/ingest", "parca": "/api/profiles/writeraw"}
        return self.url + path[self.kind]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would resend the
    credentials to wherever it points, and turn the POST into a GET."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ssl.create_default_context()))


def series_labels(target: Target, dump: Dump) -> list[tuple[str, str]]:
    """The series' labels: the service, host, pid, the executable's build-id
    and leakprobe's version, then --label (which may override any of them)."""
    program = program_of(dump) or ""
    main = next((m for m in dump.maps if m.file == program and "x" in m.perms), None)
    build_id = dump.build_ids.get(main.file if main else program, "")
    service = target.service or os.path.basename(program) or "unknown"
    labels = {
        "service_name": service,
        "hostname": dump.meta.get("host") or socket.gethostname(),
        "pid": str(dump.pid) if dump.pid is not None else "unknown",
        "build_id": build_id or "unknown",
        "leakprobe_version": dump.meta.get("version") or "unknown",
    }
    # What the dump says is the process's data: valid UTF-8, printable.
    labels = {key: shown(value) for key, value in labels.items()}
    for key, value in target.labels:
        labels[key] = value
    return list(labels.items())


@dataclass
class Profile:
    """One dump, ready to send: its series labels, its time, and the gzipped
    profile.proto (symbolized when it was made, while the binaries were there)."""

    labels: list[tuple[str, str]]
    time: float
    data: bytes


def profile_of(target: Target, dump: Dump, debug_dir: list[str]) -> Profile:
    return Profile(series_labels(target, dump), dump.time or 0.0, encode_dumps([dump], [], debug_dir)[0])


def body_and_url(target: Target, profile: Profile) -> tuple[str, bytes, str]:
    """(URL, body, content type) of one profile's request."""
    labels = profile.labels
    raw = base64.b64encode(profile.data).decode("ascii")
    named = [{"name": "__name__", "value": PROFILE_NAME}] + [{"name": k, "value": v} for k, v in labels]
    if target.kind == "push":
        sample = {"ID": str(uuid.uuid4()), "rawProfile": raw}
        body = {"series": [{"labels": named, "samples": [sample]}]}
        return target.endpoint, json.dumps(body).encode(), "application/json"
    if target.kind == "parca":
        body = {"series": [{"labels": {"labels": named}, "samples": [{"rawProfile": raw}]}], "normalized": False}
        return target.endpoint, json.dumps(body).encode(), "application/json"
    # /ingest: the service name is the label set's name; no quoting in it.
    values = dict(labels)
    service = SERVICE_CHARS.sub("_", values.pop("service_name"))
    pairs = ",".join(f"{k}={re.sub(r'[,{}]', '_', v.strip())}" for k, v in values.items())
    when = str(int(profile.time))
    query = urllib.parse.urlencode({"name": f"{service}{{{pairs}}}", "from": when, "until": when, "format": "pprof"})
    return f"{target.endpoint}?{query}", profile.data, "application/octet-stream"


def send(target: Target, profile: Profile) -> None:
    """Sends one dump's profile; PushError with one line if not accepted."""
    url, body, content_type = body_and_url(target, profile)
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    if target.kind == "push":
        request.add_header("Connect-Protocol-Version", "1")
    for key, value in target.headers.items():
        request.add_header(key, value)
    where = shown(target.endpoint)
    try:
        with OPENER.open(request, timeout=target.timeout) as response:
            response.read(RESPONSE_CAP)
    except urllib.error.HTTPError as e:
        status = e.code
        try:
            text = e.read(RESPONSE_CAP).decode("utf-8", "replace")
        except OSError:
            text = ""
        # Connect and grpc-gateway answer with {"code", "message"}.
        try:
            message = json.loads(text).get("message") or text
        except (ValueError, AttributeError):
            message = text
        said = shown(" ".join(str(message).split())[:300])
        if 300 <= status < 400:
            moved = shown(e.headers.get("Location", "?")[:300])
            raise PushError(f"{where} answered {status} (redirect to {moved}): give that URL instead", False) from None
        # A profile refused as it is stays refused; the rest may pass later.
        refused = status in (400, 413, 415, 422)
        raise PushError(f"{where} answered {status} {shown(e.reason or '')}: {said or '(no message)'}", not refused) from None
    except (TimeoutError, socket.timeout):
        raise PushError(f"{where}: no answer within {target.timeout:g} s", True) from None
    except urllib.error.URLError as e:
        reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
        if isinstance(e.reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {target.timeout:g} s"
        raise PushError(f"{where}: {shown(str(reason))}", True) from None
    except OSError as e:
        raise PushError(f"{where}: {shown(e.strerror or str(e))}", True) from None
    except http.client.HTTPException as e:  # not HTTP at all, or cut short
        raise PushError(f"{where}: not an HTTP answer ({type(e).__name__}: {shown(str(e)[:200])})", True) from None


def push_file(target: Target, path: str, debug_dir: list[str]) -> None:
    """Reads, symbolizes and sends one dump (DumpError, PushError)."""
    send(target, profile_of(target, read_dump(path), debug_dir))


# -- the command line, shared with `watch` ------------------------------------


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not LABEL_NAME.fullmatch(key) or key.startswith("__"):
        raise argparse.ArgumentTypeError(
            f"{shown(text[:60])!r} is not KEY=VALUE with KEY a label name ([A-Za-z_][A-Za-z0-9_]*, not starting with __)"
        )
    if not value.strip() or not value.isprintable():
        raise argparse.ArgumentTypeError(f"{shown(text[:60])!r}: the value must be printable and not empty")
    return key, value


def add_target_options(s: argparse.ArgumentParser) -> None:
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--pyroscope", metavar="URL", help="a Grafana Pyroscope server (or Alloy's pyroscope.receive_http)")
    where.add_argument("--parca", metavar="URL", help="a Parca server (its HTTP/JSON gateway, /api/profiles/writeraw)")
    s.add_argument(
        "--api",
        choices=("push", "ingest"),
        default="push",
        help="Pyroscope: the Push API (default) or /ingest, for servers older than the Push API",
    )
    s.add_argument("--label", action="append", type=label, default=[], metavar="KEY=VALUE", help="a series label (repeatable)")
    s.add_argument("--name", metavar="SERVICE", help="the service_name label (default: the program's name)")
    s.add_argument("--tenant", metavar="ID", help=f"X-Scope-OrgID, the Pyroscope tenant (or ${ENV_TENANT})")
    s.add_argument("--user", metavar="USER", help=f"basic auth user (or ${ENV_USER}); the password from ${ENV_PASSWORD}")
    s.add_argument("--password-file", metavar="FILE", help=f"basic auth password, first line of FILE (else ${ENV_PASSWORD})")
    s.add_argument("--timeout", type=argtypes.seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per request (30)")
    s.add_argument("--debug-dir", action="append", default=[], metavar="DIR", help="as for report")


def target_of(args: argparse.Namespace) -> Target:
    """The target the options name; ValueError with one line if they do not add up."""
    url = args.pyroscope or args.parca
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        parts = urllib.parse.urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{shown(url[:200])!r} is not an http:// or https:// URL of a server (no query)")
    if parts.username or parts.password:
        raise ValueError("put no credentials in the URL (they would show in ps and logs): use --user and a password file")
    if args.name is not None and not (args.name.strip() and args.name.isprintable()):
        raise ValueError("--name must be printable and not empty")
    kind = "parca" if args.parca else args.api
    if args.parca and args.api != "push":
        raise ValueError("--api chooses between Pyroscope's APIs; Parca has one")
    target = Target(kind, url.rstrip("/"), args.timeout, labels=args.label, service=args.name)
    tenant = args.tenant or os.environ.get(ENV_TENANT)
    if tenant:
        if not tenant.isprintable():
            raise ValueError("the tenant must be printable")
        target.headers["X-Scope-OrgID"] = tenant
    user = args.user or os.environ.get(ENV_USER)
    if user:
        password = os.environ.get(ENV_PASSWORD)
        if args.password_file:
            try:
                with open(args.password_file, encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"cannot read the password file {shown(args.password_file)}: {e}") from None
        if password is None:
            raise ValueError(f"--user {shown(user)} needs a password: --password-file FILE or ${ENV_PASSWORD}")
        if ":" in user:
            raise ValueError("a basic auth user name cannot hold ':'")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        target.headers["Authorization"] = f"Basic {token}"
    return target


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not `common`: the profile keeps every stack and frame, as `pprof`'s.
    del common
    s = sub.add_parser(
        "push",
        help="send dumps, symbolized, to Grafana Pyroscope or Parca",
        description="Symbolize each dump (as `pprof` does) and send it as one profile to a continuous-profiling "
        "back end, with labels service_name, hostname, pid, build_id and leakprobe_version (and --label).",
    )
    s.add_argument("dumps", nargs="+", metavar="DUMP")
    add_target_options(s)
    s.set_defaults(run=push)


def push(args: argparse.Namespace) -> int:
    try:
        target = target_of(args)
    except ValueError as e:
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    for path in args.dumps:
        try:
            push_file(target, path, args.debug_dir)
        except (DumpError, PushError) as e:
            print(
                f"leakprobe: {shown(path)}: not pushed: {e}" if isinstance(e, PushError) else f"leakprobe: {e}", file=sys.stderr
            )
            return 1
        print(f"pushed {shown(path)}")
    return 0
