"""The client configuration ``client-config`` writes for one RM (unchanged) and for several (YARN
and WebHDFS HA), its credential's token services, and the ``--rm`` forms of the command."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from cortex_rm import cli
from cortex_rm.client_config import (
    FAILOVER_MAX_ATTEMPTS, FAILOVER_SLEEP_BASE_MS, FAILOVER_SLEEP_MAX_MS, NAMESERVICE, RMAddresses, write_client_config,
)  # fmt: skip
from cortex_rm.user_credential import CREDENTIAL_FILE, UserCredential
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.delegation import RM_DELEGATION_KIND, WEBHDFS_DELEGATION_KIND
from cortex_rm.yarn.log_aggregation import DEFAULT_REMOTE_APP_LOG_DIR
from cortex_rm.yarn_api.delegation_tokens import read_token_writable
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.tokens import credentials_file_bytes
from cortex_rm.yarn_api.writable import read_token_storage

CREDENTIAL = UserCredential(
    TokenProto(identifier=b"rm-ident", password=b"rm-pass", kind=RM_DELEGATION_KIND, service="x"),
    TokenProto(identifier=b"fs-ident", password=b"fs-pass", kind=WEBHDFS_DELEGATION_KIND, service="y"),
)


def rm(n: int) -> RMAddresses:
    """The n-th RM, on 127.0.0.1 with ports of its own."""
    host = "127.0.0.1"
    return RMAddresses(HostPort(host, 18000 + n), HostPort(host, 19000 + n), HostPort(host, 20000 + n))


def properties(path: Path) -> dict[str, str]:
    """A Hadoop site file's properties, in order."""
    root = ElementTree.parse(path).getroot()
    return {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}


def tokens(path: Path) -> dict[str, TokenProto]:
    """The token file's tokens by kind."""
    stored, _ = read_token_storage(path.read_bytes())
    return {t.kind: t for t in map(read_token_writable, stored.values())}


def test_one_rm_gets_the_plain_configuration_and_ip_port_token_services(tmp_path: Path) -> None:
    """One RM: YARN's plain keys, webhdfs://<web address>, no HA key; each token's service is the
    ip:port its client resolves; identifiers and passwords are the credential's."""
    write_client_config(tmp_path, rm(1), CREDENTIAL, None, upload_spark=False, say=lambda _: None)
    assert properties(tmp_path / "yarn-site.xml") == {
        "yarn.resourcemanager.hostname": "127.0.0.1",
        "yarn.resourcemanager.address": "127.0.0.1:18001",
        "yarn.resourcemanager.scheduler.address": "127.0.0.1:19001",
        "yarn.resourcemanager.webapp.address": "127.0.0.1:20001",
        "yarn.resourcemanager.connect.max-wait.ms": "60000",
        "yarn.resourcemanager.connect.retry-interval.ms": "1000",
        "yarn.timeline-service.enabled": "false",
        "yarn.log-aggregation-enable": "true",
        "yarn.nodemanager.remote-app-log-dir": DEFAULT_REMOTE_APP_LOG_DIR,
    }
    token_file = tmp_path.resolve() / CREDENTIAL_FILE
    assert properties(tmp_path / "core-site.xml") == {
        "fs.defaultFS": "webhdfs://127.0.0.1:20001", "hadoop.token.files": str(token_file)
    }
    found = tokens(token_file)
    assert found[RM_DELEGATION_KIND].service == "127.0.0.1:18001"
    assert found[WEBHDFS_DELEGATION_KIND].service == "127.0.0.1:20001"
    rm_token, fs_token = found[RM_DELEGATION_KIND], found[WEBHDFS_DELEGATION_KIND]
    assert (rm_token.identifier, rm_token.password) == (b"rm-ident", b"rm-pass")
    assert (fs_token.identifier, fs_token.password) == (b"fs-ident", b"fs-pass")
    # a list of one is the same configuration
    write_client_config(tmp_path / "list", [rm(1)], CREDENTIAL, None, upload_spark=False, say=lambda _: None)
    assert properties(tmp_path / "list" / "yarn-site.xml") == properties(tmp_path / "yarn-site.xml")


def test_three_rms_get_yarn_and_webhdfs_ha_settings_in_the_order_given(tmp_path: Path) -> None:
    """Three RMs: rm-ids rm1..rm3 with each id's client, scheduler and web address in the given
    order, the bounded short failover sleeps, no plain RM address; the file system is the logical
    nameservice whose namenodes are the RMs' web addresses, with a failover proxy provider named."""
    write_client_config(tmp_path, [rm(1), rm(2), rm(3)], CREDENTIAL, None, upload_spark=False, say=lambda _: None)
    yarn = properties(tmp_path / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.ha.enabled"] == "true"
    assert yarn["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2,rm3"
    for n in (1, 2, 3):
        assert yarn[f"yarn.resourcemanager.hostname.rm{n}"] == "127.0.0.1"
        assert yarn[f"yarn.resourcemanager.address.rm{n}"] == f"127.0.0.1:{18000 + n}"
        assert yarn[f"yarn.resourcemanager.scheduler.address.rm{n}"] == f"127.0.0.1:{19000 + n}"
        assert yarn[f"yarn.resourcemanager.webapp.address.rm{n}"] == f"127.0.0.1:{20000 + n}"
    assert "yarn.resourcemanager.address" not in yarn and "yarn.resourcemanager.hostname" not in yarn
    assert yarn["yarn.client.failover-sleep-base-ms"] == str(FAILOVER_SLEEP_BASE_MS) == "500"
    assert yarn["yarn.client.failover-sleep-max-ms"] == str(FAILOVER_SLEEP_MAX_MS) == "2000"
    assert yarn["yarn.client.failover-max-attempts"] == str(FAILOVER_MAX_ATTEMPTS)
    assert yarn["yarn.log-aggregation-enable"] == "true"
    core = properties(tmp_path / "core-site.xml")
    assert core["fs.defaultFS"] == f"webhdfs://{NAMESERVICE}" == "webhdfs://cortex"
    assert core["dfs.nameservices"] == "cortex"
    assert core["dfs.ha.namenodes.cortex"] == "rm1,rm2,rm3"
    assert [core[f"dfs.namenode.http-address.cortex.rm{n}"] for n in (1, 2, 3)] == [
        "127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003"
    ]
    assert core["dfs.client.failover.proxy.provider.cortex"].endswith("ConfiguredFailoverProxyProvider")
    assert core["dfs.http.client.failover.sleep.base.millis"] == "500"
    assert core["hadoop.token.files"] == str(tmp_path.resolve() / CREDENTIAL_FILE)


def test_with_three_rms_the_tokens_carry_the_services_hadoops_ha_clients_select_by(tmp_path: Path) -> None:
    """The RM token's service is every RM's client ip:port comma-joined in rm-id order
    (ClientRMProxy.getRMDelegationTokenService); the file system token's is ha-webhdfs:cortex
    (HAUtilClient.buildTokenServiceForLogicalUri); the secrets are unchanged."""
    write_client_config(tmp_path, [rm(1), rm(2), rm(3)], CREDENTIAL, None, upload_spark=False, say=lambda _: None)
    found = tokens(tmp_path / CREDENTIAL_FILE)
    assert found[RM_DELEGATION_KIND].service == "127.0.0.1:18001,127.0.0.1:18002,127.0.0.1:18003"
    assert found[WEBHDFS_DELEGATION_KIND].service == "ha-webhdfs:cortex"
    assert found[RM_DELEGATION_KIND].password == b"rm-pass" and found[WEBHDFS_DELEGATION_KIND].password == b"fs-pass"


def credential_file(tmp_path: Path) -> Path:
    path = tmp_path / "user.token"
    path.write_bytes(credentials_file_bytes([("rm", CREDENTIAL.rm), ("fs", CREDENTIAL.fs)]))
    return path


def test_the_command_takes_several_rms_comma_separated_or_repeated(tmp_path: Path) -> None:
    """``--rm a,b --rm c`` is three RMs in that order, each with YARN's default other ports on its host."""
    out = tmp_path / "conf"
    argv = ["client-config", "--out", str(out), "--rm", "127.0.0.1:18001, 127.0.0.2:18002", "--rm", "127.0.0.3:18003"]
    assert cli.main([*argv, "--credential", str(credential_file(tmp_path)), "--no-spark-upload"]) == 0
    yarn = properties(out / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.ha.rm-ids"] == "rm1,rm2,rm3"
    assert [yarn[f"yarn.resourcemanager.address.rm{n}"] for n in (1, 2, 3)] == [
        "127.0.0.1:18001", "127.0.0.2:18002", "127.0.0.3:18003"
    ]
    assert yarn["yarn.resourcemanager.scheduler.address.rm2"] == "127.0.0.2:8030"
    assert properties(out / "core-site.xml")["dfs.namenode.http-address.cortex.rm3"] == "127.0.0.3:8088"


def test_the_command_with_one_rm_writes_the_plain_configuration(tmp_path: Path) -> None:
    """``--rm HOST:PORT`` alone: no HA key, as before."""
    out = tmp_path / "conf"
    argv = ["client-config", "--out", str(out), "--rm", "127.0.0.1:18001", "--no-spark-upload"]
    assert cli.main([*argv, "--credential", str(credential_file(tmp_path))]) == 0
    yarn = properties(out / "yarn-site.xml")
    assert yarn["yarn.resourcemanager.address"] == "127.0.0.1:18001"
    assert not any(".ha." in key for key in yarn)


@pytest.mark.parametrize("value", ["", " , ", "nohost", "127.0.0.1:18001,bad:port"])
def test_the_command_refuses_a_malformed_rm_list(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty list or an address that is not host:port is refused, naming --rm; nothing is written."""
    out = tmp_path / "conf"
    argv = ["client-config", "--out", str(out), "--rm", value, "--credential", str(credential_file(tmp_path))]
    assert cli.main([*argv, "--no-spark-upload"]) == 2
    assert "--rm:" in capsys.readouterr().err
    assert not out.exists()
