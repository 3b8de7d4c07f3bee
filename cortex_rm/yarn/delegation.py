"""Users' credentials as values: Hadoop delegation tokens that Cortex issues to each user.

A user is authenticated, not just named, by a pair of delegation tokens that the
cluster's admin issues (``cortex-rm user add``) and that Hadoop's stock clients
present on their own, security on or off:

* ``RM_DELEGATION_TOKEN`` (service: the RM's client ``ip:port``): the IPC client
  authenticates with SASL TOKEN / DIGEST-MD5 whenever its user holds a token, and
  the REST API takes it in the ``Hadoop-YARN-RM-Delegation-Token`` header;
* ``WEBHDFS delegation`` (service: the file system's ``ip:port``):
  ``WebHdfsFileSystem`` sends it as ``delegation=`` instead of ``user.name=``.

Both carry the same identifier (owner, issue and max dates, a sequence number, the
master key's id); the RM's is written as ``YARNDelegationTokenIdentifierProto``, the
file system's in Hadoop's Writable form, and each password is HMAC-SHA1 of those
bytes under the RM's delegation key (``MasterKey.password``).  A token is valid
while the RM still knows its sequence number (revoking a user forgets all of hers)
and its max date has not passed.

An *application* credential is the same pair with ``renewer`` naming one
application: the RM puts it in place of the user's own tokens in the launch
context of the application's AM, so a container on a contributor's machine never
holds the user's credential, only one that dies with its application and that may
act on that application alone.
"""

from __future__ import annotations

from dataclasses import dataclass

RM_DELEGATION_KIND = "RM_DELEGATION_TOKEN"
WEBHDFS_DELEGATION_KIND = "WEBHDFS delegation"
#: The REST header that carries an RM delegation token (YARN's RMWebServices).
REST_TOKEN_HEADER = "Hadoop-YARN-RM-Delegation-Token"
#: The ``renewer`` of an application credential: this prefix and the application id.
APPLICATION_RENEWER_PREFIX = "app:"


class InvalidToken(Exception):
    """A token that authenticates nobody; the message says why (Hadoop's ``SecretManager.InvalidToken``)."""


@dataclass(frozen=True)
class DelegationIdentifier:
    """What a user's delegation token says (``AbstractDelegationTokenIdentifier``'s fields)."""

    owner: str
    renewer: str
    real_user: str
    issue_ms: int
    max_ms: int
    sequence: int
    key_id: int

    @property
    def application(self) -> str | None:
        """The application id an application credential is bound to; None for a user's own."""
        if self.renewer.startswith(APPLICATION_RENEWER_PREFIX):
            return self.renewer[len(APPLICATION_RENEWER_PREFIX) :]
        return None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for.

    ``user`` is None for an unauthenticated caller (no credential, or a SIMPLE user
    name, which proves nothing); ``application`` is set when the credential is an
    application's, which may act on that application only.
    """

    user: str | None
    application: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def name(self, anonymous: str) -> str:
        return self.user if self.user is not None else anonymous


ANONYMOUS = Principal(None)

