"""What the daemon writes to its log about a request: never a credential, never raw client bytes."""

from __future__ import annotations

from cortex_rm.yarn_api.log_text import loggable_uri


def test_credentials_in_a_query_are_redacted_and_the_rest_kept() -> None:
    uri = b"/webhdfs/v1/user/alice?op=OPEN&delegation=SECRETTOKEN&offset=5&ticket=SIGNED&Token=x"
    assert loggable_uri(uri) == "/webhdfs/v1/user/alice?op=OPEN&delegation=<redacted>&offset=5&ticket=<redacted>&Token=<redacted>"


def test_a_uri_without_secrets_is_only_sanitised() -> None:
    assert loggable_uri(b"/ws/v1/cluster/apps/\x00\x1b[2J?x=1") == "/ws/v1/cluster/apps/\\x00\\x1b[2J?x=1"
    assert loggable_uri(b"/a?delegation") == "/a?delegation"  # no value, nothing to hide
    assert loggable_uri(None) == "-"
