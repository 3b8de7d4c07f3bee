"""``cortex-rm event ...`` (``event_cli.py``): its arguments, where it finds the cluster and the
credential, and its exit statuses and streams when the cluster cannot be reached."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from cortex_rm.cli import _parser, main
from cortex_rm.event_cli import EventCliError, _endpoints, client_for
from cortex_rm.local_cluster import CLUSTER_FILE, free_ports
from cortex_rm.node import READY_FILE


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["event", *argv])


def test_register_takes_every_option_of_a_registration() -> None:
    args = parse(
        "register", "hello", "--file", "hello.py", "--handler", "main.run", "--replicas", "3", "--mode", "vote",
        "--timeout-s", "2.5", "--memory-mb", "128", "--max-concurrency", "2", "--schedule", "every 5 m",
        "--grant", "bob", "--grant", "carol", "--endpoint", "n1:8042", "--endpoint", "n2:8042", "--credential", "a.token",
    )  # fmt: skip
    assert (args.event_command, args.name, args.file, args.handler, args.replicas, args.mode) == (
        "register", "hello", Path("hello.py"), "main.run", 3, "vote"
    )  # fmt: skip
    assert (args.timeout_s, args.memory_mb, args.max_concurrency, args.schedule, args.grant) == (
        2.5, 128, 2, "every 5 m", ["bob", "carol"]
    )  # fmt: skip
    assert (args.endpoint, args.credential, args.workdir) == (["n1:8042", "n2:8042"], Path("a.token"), None)


def test_register_defaults_leave_the_limits_to_the_cluster() -> None:
    args = parse("register", "hello", "--file", "f.py", "--workdir", "/tmp/c")
    assert (args.handler, args.replicas, args.mode, args.grant) == ("handler", 1, "first", [])
    assert (args.timeout_s, args.memory_mb, args.max_concurrency, args.schedule) == (None, None, None, None)


def test_the_other_subcommands_parse() -> None:
    args = parse("trigger", "hello", "--data", '{"a": 1}', "--async", "--workdir", "/tmp/c")
    assert (args.name, args.data, args.run_async, args.workdir) == ("hello", '{"a": 1}', True, Path("/tmp/c"))
    assert (parse("trigger", "hello").data, parse("trigger", "hello").run_async) == ("null", False)
    assert parse("result", "abc-1", "--wait").wait and not parse("result", "abc-1").wait
    assert parse("list", "--json").json
    assert parse("get", "hello").name == parse("delete", "hello").name == "hello"
    assert parse("logs", "abc-1").activation_id == "abc-1"


@pytest.mark.parametrize(
    "argv",
    [["register", "hello"], ["register", "hello", "--file", "f.py", "--mode", "all"],
     ["trigger", "hello", "--workdir", "d", "--endpoint", "n:1"], ["trigger"], ["frobnicate"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --file, an unknown mode, both --workdir and --endpoint, no name or no such subcommand."""
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_a_client_needs_to_be_told_where_the_cluster_is(tmp_path: Path) -> None:
    """No --workdir and no --endpoint, or a work dir with no cluster, is a usage error saying what to give."""
    with pytest.raises(EventCliError, match="--workdir DIR .* or --endpoint HOST:PORT"):
        client_for(parse("list"), io.StringIO())
    with pytest.raises(EventCliError, match="no local cluster in"):
        client_for(parse("list", "--workdir", str(tmp_path)), io.StringIO())


def test_a_work_dir_gives_its_running_nodes_then_its_rm_and_its_user_token(tmp_path: Path) -> None:
    """The web address of each node that has started (its ready.json), then the RM's; the
    credential is DIR/user.token (a missing one is an error naming it)."""
    rm = {"client": "127.0.0.1:8032", "scheduler": "127.0.0.1:8030", "webapp": "127.0.0.1:8088"}
    nodes = []
    for i, web in ((1, "127.0.0.1:8042"), (2, "127.0.0.1:8043"), (3, None)):
        directory = tmp_path / f"node{i}"
        directory.mkdir()
        if web is not None:
            (directory / READY_FILE).write_text(json.dumps({"nodemanager.webapp_address": web}))
        nodes.append({"name": f"node{i}", "directory": str(directory), "config": "", "pid": 0,
                      "nm_webapp": web or "", "rm": rm if i == 1 else None})  # fmt: skip
    (tmp_path / CLUSTER_FILE).write_text(json.dumps(nodes))
    assert _endpoints(tmp_path, []) == ["127.0.0.1:8042", "127.0.0.1:8043", "127.0.0.1:8088"]
    assert _endpoints(tmp_path, ["other:1"]) == ["other:1"]
    with pytest.raises(EventCliError, match="cannot read the credential .*user.token"):
        client_for(parse("list", "--workdir", str(tmp_path)), io.StringIO())


def test_the_credential_comes_from_the_option_or_hadoop_conf_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--credential FILE is read (a file that is no credential is refused naming it); without it,
    $HADOOP_CONF_DIR/cortex-user.token if there is one, else no credential."""
    bad = tmp_path / "bad.token"
    bad.write_bytes(b"not a token file")
    with pytest.raises(EventCliError, match="bad.token is not a Cortex credential"):
        client_for(parse("list", "--endpoint", "n:1", "--credential", str(bad)), io.StringIO())
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert client_for(parse("list", "--endpoint", "n:1"), io.StringIO()).credential is None
    (tmp_path / "cortex-user.token").write_bytes(b"also not a token file")
    with pytest.raises(EventCliError, match="cortex-user.token is not a Cortex credential"):
        client_for(parse("list", "--endpoint", "n:1"), io.StringIO())


def test_an_unreachable_cluster_exits_1_with_the_error_on_stderr_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """stdout stays empty (it is for the result alone); stderr says what it waited for and what failed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    (port,) = free_ports(1)
    assert main(["event", "trigger", "hello", "--data", json.dumps({"a": 1}), "--endpoint", f"127.0.0.1:{port}"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "waiting for hello to answer" in err
    assert f"cortex-rm: trigger hello: no endpoint answered; tried 127.0.0.1:{port} (Connection refused)" in err


def test_data_that_is_not_json_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["event", "trigger", "hello", "--data", "{a: 1}", "--endpoint", "127.0.0.1:9"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--data is not JSON" in err


def test_an_invalid_endpoint_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["event", "list", "--endpoint", "node1"]) == 2
    assert "'node1' is not a web address host:port" in capsys.readouterr().err
