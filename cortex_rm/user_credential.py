"""A user's credential file on the client's side: what ``cortex-rm user add`` wrote, bound to
the addresses this client reaches the cluster at.

The file is a Hadoop token file holding the user's RM delegation token and her
WebHDFS delegation token.  A token's service is not covered by its password, and
Hadoop's clients pick a token by service — the ``ip:port`` they resolve the RM's
client address and the file system's address to — so ``client-config`` rewrites
both services for the addresses it configures and keeps the result beside the
configuration (mode 600), named by ``hadoop.token.files`` in ``core-site.xml``:
Hadoop's ``UserGroupInformation`` loads it at login, security on or off.  Spark
ships only ``*.xml`` files of ``HADOOP_CONF_DIR`` to the cluster, so the file
stays on the client's machine (the RM replaces any token a submission carries
by the application's own, see ``yarn_api/app_credentials.py``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND, InvalidToken
from cortex_rm.yarn_api.delegation_tokens import read_fs_identifier, read_token_writable, to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.tokens import credentials_file_bytes, write_token_file
from cortex_rm.yarn_api.writable import MalformedCredentials, read_token_storage

#: The file ``client-config`` writes beside the configuration (not ``*.xml``: Spark does not ship it).
CREDENTIAL_FILE = "cortex-user.token"


class CredentialError(Exception):
    """The credential file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class UserCredential:
    """A user's two tokens."""

    rm: TokenProto
    fs: TokenProto

    @property
    def user(self) -> str:
        return read_fs_identifier(self.fs.identifier).owner

    def webhdfs_delegation(self) -> str:
        """The file system token as WebHDFS's ``delegation`` parameter."""
        return to_url_string(self.fs)

    def rest_header(self) -> str:
        """The RM token as the ``Hadoop-YARN-RM-Delegation-Token`` header."""
        return to_url_string(self.rm)

    def bound_to(self, rm_client: HostPort, webapp: HostPort) -> bytes:
        """The token file with each token's service set to the ``ip:port`` a Hadoop client resolves."""
        return self.bound_to_services(token_service(rm_client), token_service(webapp))

    def bound_to_services(self, rm_service: str, fs_service: str) -> bytes:
        """The token file with the tokens' services set as given (with several RMs, Hadoop's HA
        clients select by other services than one ``ip:port``: ``client_config.py`` says which)."""
        rm = TokenProto(identifier=self.rm.identifier, password=self.rm.password, kind=self.rm.kind, service=rm_service)
        fs = TokenProto(identifier=self.fs.identifier, password=self.fs.password, kind=self.fs.kind, service=fs_service)
        return credentials_file_bytes([(rm.service, rm), (fs.service, fs)])


def token_service(address: HostPort) -> str:
    """``SecurityUtil.buildTokenService``: the address's IP and port (``hadoop.security.token.service.use_ip``)."""
    try:
        ip = socket.gethostbyname(address.host)
    except OSError as e:
        raise CredentialError(f"cannot resolve {address.host}: {e}") from None
    return f"{ip}:{address.port}"


def load_credential(path: Path) -> UserCredential:
    """The credential in ``path``; ``CredentialError`` saying what is wrong."""
    try:
        tokens, _ = read_token_storage(path.read_bytes())
        found: dict[str, TokenProto] = {}
        for raw in tokens.values():
            token = read_token_writable(raw)
            found.setdefault(token.kind, token)
    except OSError as e:
        raise CredentialError(f"cannot read the credential {path}: {e.strerror}") from None
    except (MalformedCredentials, InvalidToken) as e:
        raise CredentialError(f"{path} is not a Cortex credential (a Hadoop token file): {e}") from None
    if RM_DELEGATION_KIND not in found or WEBHDFS_DELEGATION_KIND not in found:
        raise CredentialError(
            f"{path} lacks an {RM_DELEGATION_KIND} or {WEBHDFS_DELEGATION_KIND} token;"
            " ask the cluster's admin for a new one (`cortex-rm user add NAME --out FILE`)"
        )
    return UserCredential(found[RM_DELEGATION_KIND], found[WEBHDFS_DELEGATION_KIND])


write_private = write_token_file  # the name the commands and tests use


# ------------------------------------------------------------------ the admin's calls


def _admin_call(webapp: HostPort, admin: UserCredential, method: str, user: str, timeout_s: float = 30) -> dict[str, object]:
    import http.client
    import json
    from urllib.parse import quote

    from cortex_rm.yarn.delegation import REST_TOKEN_HEADER

    connection = http.client.HTTPConnection(webapp.host, webapp.port, timeout=timeout_s)
    try:
        connection.request(
            method, f"/ws/v1/cluster/cortex/users/{quote(user, safe='')}", headers={REST_TOKEN_HEADER: admin.rest_header()}
        )
        response = connection.getresponse()
        status, data = response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        raise CredentialError(f"cannot reach the ResourceManager's web address {webapp}: {e}; is the cluster up?") from None
    finally:
        connection.close()
    try:
        document = json.loads(data)
    except ValueError:
        document = {}
    if status != 200 or not isinstance(document, dict):
        error = document.get("RemoteException", {}) if isinstance(document, dict) else {}
        raise CredentialError(f"the ResourceManager refused ({status}): {error.get('message') or data[:200]!r}")
    return document


def request_credential(webapp: HostPort, admin: UserCredential, user: str) -> bytes:
    """A new credential for ``user`` (a token file), issued by the RM at ``webapp`` to its admin."""
    import base64

    document = _admin_call(webapp, admin, "PUT", user)
    return base64.b64decode(str(document["tokenFile"]))


def revoke_user(webapp: HostPort, admin: UserCredential, user: str) -> int:
    """Revoke every credential of ``user``; how many tokens the RM forgot."""
    count = _admin_call(webapp, admin, "DELETE", user)["revokedTokens"]
    assert isinstance(count, int)
    return count
