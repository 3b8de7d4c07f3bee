"""The Python client of Cortex's serverless events: ``from cortex_rm.client import Cortex``.

::

    from cortex_rm.client import Cortex
    from cortex_rm.user_credential import load_credential

    cortex = Cortex(["node1:8042"], credential=load_credential(Path("alice.token")))
    cortex.register("hello", "hello.py")             # uploads hello.py, registers it
    cortex.trigger("hello", {"name": "Ada"})          # the handler's result
    activation = cortex.trigger_async("hello", {})    # .id, .result(timeout), .status(), .logs()

Endpoints are the web addresses (``host:port``) of any nodes, or of the
ResourceManager.  The client asks one of them for the cluster's other nodes
(``GET /ws/v1/cortex/events/introducers``) and keeps what it learns on disk
(``introducer_cache.py``); when an endpoint refuses the connection it tries the
next: the one that answered last, then the given ones, then the learned ones.  A
call the server may have started (a trigger, a registration) is never sent twice:
only a refused connection moves it on.  Redirects (a node sends registry calls to
the ResourceManager with 307, an activation's reads to the node that holds it) are
followed.

The credential never leaves this machine: every call is signed for the node it goes to
(``events/request_proofs.py``), with the node's ring id that its 401 names (the first call
to a node is sent once without a credential to learn it).

A sync trigger waits as long as the function may run (its timeout, up to 15
minutes); a trigger refused with 429 (every replica busy) is sent again after the
server's ``Retry-After`` (at most ``MAX_BUSY_WAIT_S``), ``busy_retries`` times (2 by
default; 0 turns it off), then ``TooManyRequests`` is raised.  Errors are
``client_errors.CortexError`` subclasses with the server's message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cortex_rm.client_errors import (
    AccessDenied, ActivationFailed, ActivationPending, BadRequest, CortexConnectionError, CortexError, NotFound,
    ServerError, SignatureError, TooManyRequests, activation_failed, error_from_response,
)  # fmt: skip
from cortex_rm.client_http import (
    Answer, Broken, Unreachable, exchange, field, json_object, redirect, ring_id_named,
)  # fmt: skip
from cortex_rm.events.activation_signing import ActivationNotVerified, verify_activation
from cortex_rm.events.functions import MAX_CODE_BYTES, TIMEOUT_S, InvalidFunction, check_name
from cortex_rm.events.outcomes import MAX_PAYLOAD_BYTES
from cortex_rm.events.request_proofs import sign
from cortex_rm.introducer_cache import IntroducerCache, default_cache_dir, learned_from, valid_address
from cortex_rm.user_credential import UserCredential
from cortex_rm.webhdfs_client import WebHdfs, WebHdfsError, upload_when_ready
from cortex_rm.yarn.addresses import HostPort

__all__ = [
    "AccessDenied", "Activation", "ActivationFailed", "ActivationPending", "BadRequest", "Cortex",
    "CortexConnectionError", "CortexError", "NotFound", "ServerError", "SignatureError", "TooManyRequests", "verify",
]  # fmt: skip

EVENTS = "/ws/v1/cortex/events"
RING = "/ws/v1/ring"
DEFAULT_TIMEOUT_S = 10.0  # to connect, and for calls that do not wait on a function
TRIGGER_WAIT_S = TIMEOUT_S[2] + 60.0  # a sync trigger's answer: the longest a function may run, and a margin
POLL_WAIT_S = 60  # the longest the server holds a GET of a running activation
BUSY_RETRIES = 2
MAX_BUSY_WAIT_S = 10.0
MAX_REDIRECTS = 4
CODE_KINDS = {".py": "python", ".zip": "zip"}


def verify(activation: Mapping[str, Any], ring_members: Iterable[int | str]) -> None:
    """Check the entry node's and each executor's signature on ``activation`` (its JSON) against
    the ring's members (ring ids, as ``Cortex.ring_members`` returns them); ``SignatureError``
    says what does not hold (``events/activation_signing.py`` says what is checked)."""
    try:
        verify_activation(activation, ring_members)
    except ActivationNotVerified as e:
        raise SignatureError(f"activation {activation.get('activationId', '?')}: {e}") from None


def _target(path: str, **query: str) -> str:
    return path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")


def _name(name: str) -> str:
    try:
        return quote(check_name(name), safe="")
    except InvalidFunction as e:
        raise BadRequest(str(e)) from None


class Cortex:
    """A client of one cluster's events API (see the module doc).

    ``credential``: the user's (``user_credential.load_credential``), which signs every call;
    ``cache_dir``: where the learned introducers are kept (default ``~/.cache/cortex-rm``);
    ``timeout_s``: to connect and for calls that do not wait on a function; ``say``: told what
    the client waits for (the CLI prints it).  Threads may share one client.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        credential: UserCredential | None = None,
        cache_dir: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        busy_retries: int = BUSY_RETRIES,
        say: Callable[[str], None] | None = None,
    ) -> None:
        given = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.endpoints: list[str] = []
        for text in given:
            address = valid_address(text.removeprefix("http://").rstrip("/"))
            if address is None:
                raise BadRequest(f"{text!r} is not a web address host:port")
            self.endpoints.append(address)
        if not self.endpoints:
            raise BadRequest("give the web address (host:port) of at least one node or of the ResourceManager")
        self.credential = credential
        self.cache = IntroducerCache(cache_dir if cache_dir is not None else default_cache_dir())
        self.timeout_s = timeout_s
        self.busy_retries = busy_retries
        self._say = say or (lambda _: None)
        self._learned: list[str] = []
        self._asked_introducers = False
        self._answered: str | None = None  # the endpoint that answered last
        self._ring_ids: dict[str, int] = {}  # endpoint -> the ring id its requests are signed for

    # ------------------------------------------------------------------ the registry

    def register(
        self,
        name: str,
        file: str | Path,
        handler: str = "handler",
        replicas: int = 1,
        mode: str = "first",
        timeout_s: float | None = None,
        memory_mb: int | None = None,
        max_concurrency: int | None = None,
        schedule: str | None = None,
        grants: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Upload ``file`` (``.py``, or ``.zip`` with its dependencies) and register it as ``name`` (a new version
        if it exists): the registration's JSON.  Limits left None: the server's defaults."""
        quoted = _name(name)
        local = Path(file)
        kind = CODE_KINDS.get(local.suffix.lower())
        if kind is None:
            raise BadRequest(f"{local}: the code is a Python module (.py) or a zip (.zip)")
        body: dict[str, Any] = {"code": {"path": self.upload_code(name, local)}, "handler": handler, "kind": kind,
                                "replicas": replicas, "mode": mode}  # fmt: skip
        limits = {"timeoutS": timeout_s, "memoryMb": memory_mb, "maxConcurrency": max_concurrency}
        if any(v is not None for v in limits.values()):
            body["limits"] = {k: v for k, v in limits.items() if v is not None}
        if schedule is not None:
            body["schedule"] = schedule
        if grants:
            body["grants"] = sorted(set(grants))
        what = f"register {name}"
        answer = self._call("POST", f"{EVENTS}/functions/{quoted}", what, json.dumps(body).encode(), idempotent=False)
        return field(answer, "function", dict, what)

    def upload_code(self, name: str, local: Path) -> str:
        """Put ``local`` at ``~/.cortex/functions/<name>/<sha256[:16]>-<file name>`` in the cluster's
        file system, as the user (skipped when a file of that length is there); its path there."""
        _name(name)
        if self.credential is None:
            raise AccessDenied("registering uploads the code as you: give your credential (load_credential(FILE))")
        try:
            size = local.stat().st_size
            if size > MAX_CODE_BYTES:
                raise BadRequest(f"{local} is {size} bytes; a function's code is at most {MAX_CODE_BYTES}")
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
        except OSError as e:
            raise BadRequest(f"cannot read {local}: {e.strerror}") from None
        file_system = self.credential.fs.service  # where the RM issued it: never an address a node names
        if valid_address(file_system) is None:
            raise BadRequest(f"your credential names no file system address ({file_system[:80]!r}); ask the admin for"
                             " a new one (`cortex-rm user add NAME --out FILE`)")  # fmt: skip
        delegation = self.credential.webhdfs_delegation()
        fs = WebHdfs(HostPort.parse(file_system), delegation, timeout_s=max(self.timeout_s, 120))
        try:
            directory = f"{fs.home()}/.cortex/functions/{name}"
            path = f"{directory}/{digest[:16]}-{local.name}"
            if fs.length(path) == size:
                self._say(f"{path} is already in the file system")
                return path
            fs.mkdirs(directory, "700")
            self._say(f"uploading {local} ({size} bytes) to {path} at {file_system}")
            upload_when_ready(fs, path, local, "600", self._say, wait_s=60)
        except WebHdfsError as e:
            kinds: dict[int, type[CortexError]] = {0: CortexConnectionError, 401: AccessDenied, 403: AccessDenied}
            raise kinds.get(e.status, ServerError)(f"uploading {local}: {e}", e.status) from None
        return path

    def list(self) -> list[dict[str, Any]]:
        """The registrations of the caller's own functions."""
        what = "list functions"
        return field(self._call("GET", f"{EVENTS}/functions", what), "functions", list, what)

    def get(self, name: str) -> dict[str, Any]:
        """``name``'s registration (its owner's, or a granted user's)."""
        answer = self._call("GET", f"{EVENTS}/functions/{_name(name)}", f"get {name}")
        return field(answer, "function", dict, f"get {name}")

    def delete(self, name: str) -> dict[str, Any]:
        """Delete ``name`` (the owner only): ``{"deleted": name, "version": n}``."""
        answer = self._call("DELETE", f"{EVENTS}/functions/{_name(name)}", f"delete {name}", idempotent=False)
        return json_object(answer, f"delete {name}")

    # ------------------------------------------------------------------ triggers

    def trigger(self, name: str, payload: Any = None) -> Any:
        """Run ``name`` on ``payload`` and wait: the handler's result.  ``ActivationFailed`` (with the
        activation) if it did not succeed, ``TooManyRequests`` if every replica stayed busy."""
        return self.trigger_activation(name, payload).get("result")

    def trigger_activation(self, name: str, payload: Any = None) -> dict[str, Any]:
        """As ``trigger``, but the whole activation (its executors, signatures, timings)."""
        what = f"trigger {name}"
        answer = self._trigger(name, payload, what, {})
        activation = field(answer, "activation", dict, what)
        if activation.get("status") != "success":
            raise activation_failed(activation, answer.status)
        return activation

    def trigger_async(self, name: str, payload: Any = None) -> Activation:
        """Start ``name`` on ``payload``: its ``Activation`` (read it later, from any node)."""
        what = f"trigger {name}"
        answer = self._trigger(name, payload, what, {"blocking": "false"})
        return Activation(self, field(answer, "activationId", str, what))

    def _trigger(self, name: str, payload: Any, what: str, query: dict[str, str]) -> Answer:
        try:
            body = json.dumps(payload).encode()
        except (TypeError, ValueError) as e:
            raise BadRequest(f"{what}: the payload is not JSON: {e}") from None
        if len(body) > MAX_PAYLOAD_BYTES:
            raise BadRequest(f"{what}: the payload is {len(body)} bytes of JSON; at most {MAX_PAYLOAD_BYTES}")
        target = _target(f"{EVENTS}/functions/{_name(name)}/trigger", **query)
        attempt = 0
        while True:
            try:
                return self._call("POST", target, what, body, wait_s=TRIGGER_WAIT_S, idempotent=False)
            except TooManyRequests as e:
                if attempt >= self.busy_retries:
                    raise
                attempt += 1
                pause = min(e.retry_after if e.retry_after is not None else 1.0, MAX_BUSY_WAIT_S)
                self._say(f"every replica of {name} is busy; again in {pause:g} s ({attempt}/{self.busy_retries})")
                time.sleep(pause)

    # ------------------------------------------------------------------ activations

    def activation(self, activation_id: str, wait_s: float = 0) -> dict[str, Any]:
        """The activation's JSON; with ``wait_s`` (at most 60) the server holds the answer until it ends."""
        wait = max(0, min(POLL_WAIT_S, int(wait_s)))
        path = f"{EVENTS}/activations/{quote(activation_id, safe='')}"
        target = _target(path, wait=str(wait)) if wait else path
        answer = self._call("GET", target, f"activation {activation_id}", wait_s=wait)
        return field(answer, "activation", dict, f"activation {activation_id}")

    def logs(self, activation_id: str) -> str:
        """What the handler wrote to stdout and stderr in that activation (bounded by the server)."""
        what = f"logs of {activation_id}"
        path = f"{EVENTS}/activations/{quote(activation_id, safe='')}/logs"
        return field(self._call("GET", path, what), "logs", str, what)

    # ------------------------------------------------------------------ the cluster

    def introducers(self) -> dict[str, Any]:
        """``GET .../introducers`` (``introducers``, ``fileSystem``, ``resourceManager``), remembered on disk."""
        self._asked_introducers = True
        what = "introducers"
        document = json_object(self._call("GET", f"{EVENTS}/introducers", what, learn=False), what)
        learned = learned_from(document, int(time.time() * 1000))
        if learned is not None:
            answered = [self._answered] if self._answered is not None else []
            learned = replace(learned, introducers=tuple(dict.fromkeys([*learned.introducers, *answered])))
            self._learned = list(learned.addresses())
            try:
                self.cache.remember(learned)
            except OSError as e:
                self._say(f"cannot keep the introducers in {self.cache.path}: {e.strerror}")
        return document

    def ring_id_of(self, address: str) -> int:
        """The ring id of the node at ``address`` (what a request to it is signed for), as it says."""
        try:
            answer = self._send(address, "GET", f"{EVENTS}/introducers", None, 0)
        except (Unreachable, Broken) as e:
            raise CortexConnectionError(f"{address} does not answer ({e})") from None
        ring_id = json_object(answer, "introducers").get("ringId") if answer.status == 200 else None
        try:
            return int(str(ring_id), 16)
        except ValueError:
            raise ServerError(f"{address} names no ring id (HTTP {answer.status}): is it a Cortex node?") from None

    def ring_members(self) -> frozenset[int]:
        """The ring ids of the members a node knows (``GET /ws/v1/ring``), itself included:
        what ``verify`` checks signers against."""
        ring = field(self._call("GET", RING, "ring"), "ring", dict, "ring")
        peers = [ring.get("node"), *(ring.get("members") or [])]
        try:
            return frozenset(int(p["id"], 16) for p in peers if isinstance(p, dict) and isinstance(p.get("id"), str))
        except ValueError:
            raise ServerError("ring: a member's id is not hex") from None

    def verify(self, activation: Mapping[str, Any]) -> None:
        """``verify(activation, self.ring_members())``."""
        verify(activation, self.ring_members())

    # ------------------------------------------------------------------ HTTP

    def _rotation(self) -> Iterator[str]:
        """The endpoint that answered last; only if it fails, the given, learned and cached ones (read then)."""
        if self._answered is not None:
            yield self._answered
        cached = self.cache.candidates(self.endpoints)
        yield from (a for a in dict.fromkeys([*self.endpoints, *self._learned, *cached]) if a != self._answered)

    def _headers(self, address: str, method: str, target: str, body: bytes | None, ring_id: int | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Host": address}  # (signed: a proof is good at that address only)
        if self.credential is not None and ring_id is not None:
            rm, now_ms = self.credential.rm, int(time.time() * 1000)
            headers["Authorization"] = sign(rm.identifier, rm.password, ring_id, method, address, target, body or b"", now_ms)
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _send(self, address: str, method: str, target: str, body: bytes | None, wait_s: float) -> Answer:
        """``exchange`` signed for ``address``'s ring id; signed again for the one its 401 names (a 401 did nothing)."""
        ring_id = self._ring_ids.get(address)
        headers = self._headers(address, method, target, body, ring_id)
        answer = exchange(address, method, target, body, headers, self.timeout_s, wait_s)
        named = ring_id_named(answer) if answer.status == 401 and self.credential is not None else None
        if named is None or named == ring_id:
            return answer
        self._ring_ids[address] = named
        headers = self._headers(address, method, target, body, named)
        return exchange(address, method, target, body, headers, self.timeout_s, wait_s)

    def _call(
        self, method: str, target: str, what: str, body: bytes | None = None, *, wait_s: float = 0,
        idempotent: bool = True, learn: bool = True,
    ) -> Answer:  # fmt: skip
        """``method target`` at the first endpoint that takes the connection, redirects followed;
        the 2xx answer, else the ``CortexError`` it stands for."""
        tried = []
        for address in self._rotation():
            try:
                answer = self._send(address, method, target, body, wait_s)
            except Unreachable as e:
                tried.append(f"{address} ({e})")
                continue
            except Broken as e:
                if idempotent:
                    tried.append(f"{address} ({e})")
                    continue
                raise CortexConnectionError(
                    f"{what}: {address} took the call, then the connection failed ({e}); it may have been done"
                ) from None
            self._answered = address
            if learn and not self._asked_introducers:  # once, from the first endpoint that answers
                try:
                    self.introducers()
                except CortexError:
                    pass  # the cache only saves a lookup: the given endpoints still serve
            return self._follow(answer, address, method, what, body, wait_s)
        raise CortexConnectionError(
            f"{what}: no endpoint answered; tried {', '.join(tried)}. Check that the cluster is up, and give the"
            " web address (host:port) of a running node or of the ResourceManager"
        )

    def _follow(
        self, answer: Answer, address: str, method: str, what: str, body: bytes | None, wait_s: float
    ) -> Answer:
        for _ in range(MAX_REDIRECTS):
            moved = redirect(answer, address)
            if moved is None:
                break
            address, target = moved
            if answer.status == 303:
                method, body = "GET", None
            try:
                answer = self._send(address, method, target, body, wait_s)
            except (Unreachable, Broken) as e:
                raise CortexConnectionError(f"{what}: redirected to {address}, which does not answer ({e})") from None
        if 200 <= answer.status < 300:
            return answer
        error = error_from_response(answer.status, answer.headers, answer.body, what)
        if isinstance(error, AccessDenied) and self.credential is None:
            error = AccessDenied(f"{error} (no credential was given: pass your credential file)", error.status,
                                 error.exception, error.java_class)  # fmt: skip
        raise error


class Activation:
    """A triggered activation, read by id from any node (``Cortex.trigger_async``)."""

    def __init__(self, client: Cortex, activation_id: str) -> None:
        self.client = client
        self.id = activation_id

    def __repr__(self) -> str:
        return f"Activation({self.id!r})"

    def activation(self, wait_s: float = 0) -> dict[str, Any]:
        """Its JSON (``status`` is ``running`` until it ends)."""
        return self.client.activation(self.id, wait_s)

    def status(self) -> str:
        """``running``, ``success``, ``application_error``, ``developer_error``, ``timeout``..."""
        return str(self.activation().get("status", ""))

    def logs(self) -> str:
        return self.client.logs(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait up to ``timeout`` seconds (None: as long as it runs) and return the handler's result;
        ``ActivationFailed`` as ``trigger`` raises it, ``ActivationPending`` when the time is up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            asked = time.monotonic()
            activation = self.activation(min(left, POLL_WAIT_S))
            status = activation.get("status")
            if status == "success":
                return activation.get("result")
            if status != "running":
                raise activation_failed(activation)
            if deadline is not None and time.monotonic() >= deadline:
                raise ActivationPending(f"{self.id} is still running after {timeout:g} s", self.id)
            if time.monotonic() - asked < 0.5:  # the server did not hold the answer: do not spin
                time.sleep(0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic())))
