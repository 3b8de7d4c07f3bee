"""Who may see an application's containers and logs on a node's REST API (YARN's NM checks VIEW_APP).

A client shows a user's credential as YARN's REST clients do, in the
``Hadoop-YARN-RM-Delegation-Token`` header.  The node cannot check it (only the RM
holds the key, and nodes are other people's machines), so it asks the RM over its
tracker connection (``mayViewApplication``), which answers from the credential, the
application's owner, VIEW_APP ACL and queue and cluster admins.  Answers are kept
for ``ALLOWED_TTL_S`` (refusals ``REFUSED_TTL_S``), by the token's SHA-256 and the
application, in a table of at most ``MAX_ENTRIES``: a page of logs costs no RM call
per request, and a revoked credential stops working within the TTL.

Without a header a request is 401 (what to do is in the message); a valid credential
that may not see the application is 403, an application the RM no longer knows 404;
when the RM cannot be asked, 503.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Final

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cortex_rm.yarn.delegation import REST_TOKEN_HEADER, ViewAnswer
from cortex_rm.yarn.ids import ApplicationId
from cortex_rm.yarn_api.rest_errors import WEB_APPLICATION, RestError, forbidden, not_found, unauthorized

ALLOWED_TTL_S: Final = 30.0
REFUSED_TTL_S: Final = 5.0
MAX_ENTRIES: Final = 4096

#: The RM's answer; the tracker client's ``may_view_application``.
Ask = Callable[[str, str], "defer.Deferred[ViewAnswer]"]

NEEDS_CREDENTIAL: Final = (
    "a node's containers and logs are shown only to who may see their application: send your credential "
    f"in the {REST_TOKEN_HEADER} header (`cortex-rm user show --credential FILE` prints it)"
)


class ApplicationViewers:
    """Decides, with the RM's answers kept a while, whose requests may see which applications."""

    def __init__(self, ask: Ask, clock: IReactorTime) -> None:
        self.ask = ask
        self.clock = clock
        self._answers: dict[tuple[str, ApplicationId], tuple[float, ViewAnswer]] = {}

    def check(self, token: str | None, app_id: ApplicationId) -> defer.Deferred[None]:
        """Fires when the holder of ``token`` may see ``app_id``; fails with the 401/403/503 to answer."""
        if not token:
            return defer.fail(unauthorized(NEEDS_CREDENTIAL))

        def decided(answer: ViewAnswer) -> None:
            if answer.status == 403:
                raise forbidden(answer.reason)
            if answer.status == 404:
                raise not_found(answer.reason)
            if not answer.allowed:
                raise unauthorized(answer.reason)

        return self._answer(token, app_id).addCallback(decided)

    def visible(self, token: str | None, app_ids: Iterable[ApplicationId]) -> defer.Deferred[set[ApplicationId]]:
        """The applications of ``app_ids`` the holder of ``token`` may see (401 without a token)."""
        if not token:
            return defer.fail(unauthorized(NEEDS_CREDENTIAL))
        wanted = sorted(set(app_ids))
        answers = [self._answer(token, app) for app in wanted]
        d = defer.gatherResults(answers, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d.addCallback(lambda results: {app for app, answer in zip(wanted, results) if answer.allowed})

    def _answer(self, token: str, app_id: ApplicationId) -> defer.Deferred[ViewAnswer]:
        key = (hashlib.sha256(token.encode("utf-8", "replace")).hexdigest(), app_id)
        now = self.clock.seconds()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            return defer.succeed(kept[1])

        def asked(answer: ViewAnswer) -> ViewAnswer:
            self._answers.pop(key, None)
            while len(self._answers) >= MAX_ENTRIES:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = (now + (ALLOWED_TTL_S if answer.allowed else REFUSED_TTL_S), answer)
            return answer

        def unavailable(failure: object) -> ViewAnswer:
            raise RestError(
                503, WEB_APPLICATION, "this node cannot ask the ResourceManager about your credential now; try again"
            )

        return self.ask(token, str(app_id)).addCallbacks(asked, unavailable)
