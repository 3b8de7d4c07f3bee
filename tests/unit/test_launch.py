"""The launch of a container: YARN's environment, expansion, layout and launch_container.sh.

Checked against the facts of yarn-wire-facts.md (sections 3.1, 5.1, 5.2): the CLC
Spark 4.3 sends for its ApplicationMaster, expanded as YARN's NodeManager does.
One test runs the generated script with bash (no container) to check what the shell
makes of it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cortex_rm.container.net_policy import driver_endpoints
from cortex_rm.container.nm_container import NMContainer
from cortex_rm.container.runtime_spec import ContainerSettings, runtime_spec
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.ids import ContainerId
from cortex_rm.yarn.resources import Resource
from cortex_rm.container.launch import (
    EMPTY_CREDENTIALS,
    LaunchContextError,
    NodeFacts,
    container_paths,
    expand,
    launch_command,
    launch_environment,
    order_by_dependencies,
    plan_launch,
)

CID = "container_1700000000000_0001_01_000001"
APP = "application_1700000000000_0001"
NODE = NodeFacts(
    nm_host="10.0.0.5",
    nm_port=45454,
    nm_http_port=8042,
    java_home="/usr/lib/jvm/java-17-openjdk-amd64",
    nm_environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SECRET": "nm-only", "HADOOP_CONF_DIR": "/etc/hadoop"},
)

# Spark 4.3's AM command in cluster mode (yarn-wire-facts.md 3.1), as its list of tokens.
SPARK_AM_COMMAND = [
    "{{JAVA_HOME}}/bin/java",
    "-server",
    "-Xmx1024m",
    "-Djava.io.tmpdir={{PWD}}/tmp",
    "-Dspark.yarn.app.container.log.dir=<LOG_DIR>",
    "org.apache.spark.deploy.yarn.ApplicationMaster",
    "--class",
    "'org.apache.spark.deploy.PythonRunner'",
    "--primary-py-file",
    "pi.py",
    "--properties-file",
    "{{PWD}}/__spark_conf__/__spark_conf__.properties",
    "--dist-cache-conf",
    "{{PWD}}/__spark_conf__/__spark_dist_cache__.properties",
    "1>",
    "<LOG_DIR>/stdout",
    "2>",
    "<LOG_DIR>/stderr",
]
SPARK_CLASSPATH = (
    "{{PWD}}<CPS>{{PWD}}/__spark_conf__<CPS>{{PWD}}/__spark_libs__/*<CPS>/opt/pyspark/jars/*"
    "<CPS>{{PWD}}/__spark_conf__/__hadoop_conf__"
)


def paths(tmp: Path = Path("/data")):  # type: ignore[no-untyped-def]
    return container_paths([tmp / "d1", tmp / "d2"], [tmp / "logs"], "alice", APP, CID, spread=1)


def test_expansion_follows_yarn() -> None:
    """<LOG_DIR> -> the log dir, <CPS> -> ':', {{X}} -> $X; nothing else changes."""
    assert expand(SPARK_CLASSPATH, "/l") == (
        "$PWD:$PWD/__spark_conf__:$PWD/__spark_libs__/*:/opt/pyspark/jars/*:$PWD/__spark_conf__/__hadoop_conf__"
    )
    assert expand("1><LOG_DIR>/stdout '$x' \"y\"", "/l/c") == "1>/l/c/stdout '$x' \"y\""


def test_layout_is_yarns_usercache_and_log_dirs() -> None:
    """Work dir under usercache/<user>/appcache/<appId>/<containerId>, logs under <log_dir>/<appId>/<containerId>;
    the spread picks the disk."""
    p = paths()
    assert p.work_dir == Path(f"/data/d2/usercache/alice/appcache/{APP}/{CID}")
    assert p.app_dirs == (Path(f"/data/d1/usercache/alice/appcache/{APP}"), Path(f"/data/d2/usercache/alice/appcache/{APP}"))
    assert p.log_dir == Path(f"/data/logs/{APP}/{CID}")
    assert p.tokens_file == p.work_dir / "container_tokens"


def test_spark_am_command_is_expanded_and_joined_verbatim() -> None:
    """Spark's pre-quoted tokens are joined by single spaces, only YARN's markers replaced."""
    command = launch_command(SPARK_AM_COMMAND, Path("/l/c"))
    assert command == (
        "$JAVA_HOME/bin/java -server -Xmx1024m -Djava.io.tmpdir=$PWD/tmp -Dspark.yarn.app.container.log.dir=/l/c "
        "org.apache.spark.deploy.yarn.ApplicationMaster --class 'org.apache.spark.deploy.PythonRunner' "
        "--primary-py-file pi.py --properties-file $PWD/__spark_conf__/__spark_conf__.properties "
        "--dist-cache-conf $PWD/__spark_conf__/__spark_dist_cache__.properties 1> /l/c/stdout 2> /l/c/stderr"
    )
    with pytest.raises(LaunchContextError, match="no command"):
        launch_command([" ", ""], Path("/l"))


def test_environment_has_yarns_variables_overriding_the_clc() -> None:
    """The NM's variables come first and win over the CLC's; LOCAL_DIRS is comma-separated app dirs."""
    clc = {"CONTAINER_ID": "forged", "SPARK_USER": "alice", "CLASSPATH": SPARK_CLASSPATH}
    env = launch_environment(clc, CID, "alice", paths(), NODE)
    as_dict = dict(env)
    assert len(as_dict) == len(env)
    assert as_dict["CONTAINER_ID"] == CID
    assert as_dict["LOCAL_DIRS"] == f"/data/d1/usercache/alice/appcache/{APP},/data/d2/usercache/alice/appcache/{APP}"
    assert as_dict["LOCAL_USER_DIRS"] == "/data/d1/usercache/alice/,/data/d2/usercache/alice/"
    assert as_dict["LOG_DIRS"] == f"/data/logs/{APP}/{CID}"
    assert (as_dict["NM_HOST"], as_dict["NM_PORT"], as_dict["NM_HTTP_PORT"]) == ("10.0.0.5", "45454", "8042")
    assert (as_dict["USER"], as_dict["LOGNAME"], as_dict["HOME"]) == ("alice", "alice", "/home/")
    assert as_dict["PWD"] == str(paths().work_dir)
    assert as_dict["HADOOP_TOKEN_FILE_LOCATION"] == f"{paths().work_dir}/container_tokens"
    assert as_dict["JVM_PID"] == "$$"
    assert as_dict["HADOOP_CONF_DIR"] == "/etc/hadoop"
    assert as_dict["JAVA_HOME"] == "/usr/lib/jvm/java-17-openjdk-amd64"  # the configured JVM, not the NM's
    assert (as_dict["PATH"], as_dict["LANG"]) == ("/usr/bin:/bin", "C.UTF-8")
    assert "SECRET" not in as_dict  # not whitelisted
    assert as_dict["CLASSPATH"].startswith("$PWD:$PWD/__spark_conf__:")
    names = [k for k, _ in env]
    assert names.index("PWD") < names.index("CLASSPATH")


def test_whitelisted_variables_set_by_the_clc_are_the_clcs() -> None:
    """A CLC's JAVA_HOME or PATH wins over the inherited one."""
    env = dict(launch_environment({"JAVA_HOME": "/opt/jdk21", "PATH": "$PATH:/x"}, CID, "u", paths(), NODE))
    assert env["JAVA_HOME"] == "/opt/jdk21"
    assert env["PATH"] == "$PATH:/x"


def test_variables_are_exported_after_those_they_refer_to() -> None:
    """B=$A/x is exported after A even when the CLC lists it first; self-references keep their place."""
    ordered = order_by_dependencies({"B": "$A/x", "C": "${B}:y", "A": "a", "PATH": "$PATH:/z", "D": "$D$E", "E": "$D"})
    names = [k for k, _ in ordered]
    assert names.index("A") < names.index("B") < names.index("C")
    assert set(names) == {"A", "B", "C", "PATH", "D", "E"}


def test_invalid_variable_names_are_refused() -> None:
    """A variable name that is not a shell identifier cannot be exported."""
    with pytest.raises(LaunchContextError, match="not a valid shell identifier"):
        launch_environment({"A B": "x"}, CID, "u", paths(), NODE)


def test_script_is_yarns_and_empty_tokens_become_empty_credentials() -> None:
    """The script exports then execs bash -c with the joined command; no tokens -> empty Credentials."""
    plan = plan_launch(
        container_id=CID,
        user="alice",
        clc_environment={"SPARK_USER": "alice"},
        commands=SPARK_AM_COMMAND,
        tokens=b"",
        paths=paths(),
        node=NODE,
    )
    lines = plan.script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -o pipefail -e" in lines
    assert f'export CONTAINER_ID="{CID}"' in lines
    assert 'export SPARK_USER="alice"' in lines
    assert lines[-1].startswith('exec /bin/bash -c "$JAVA_HOME/bin/java -server')
    assert lines[-1].endswith(f'1> /data/logs/{APP}/{CID}/stdout 2> /data/logs/{APP}/{CID}/stderr"')
    assert plan.tokens == EMPTY_CREDENTIALS
    assert plan.argv == ["/bin/bash", str(paths().work_dir / "launch_container.sh")]
    assert plan.process_environment["JAVA_HOME"] == NODE.java_home


def test_script_runs_under_bash_as_yarn_would(tmp_path: Path) -> None:
    """Run the script with bash (no container): $PWD expands, Spark-quoted args arrive as one argument each,
    the command's redirections land in the log dir."""
    p = container_paths([tmp_path / "local"], [tmp_path / "logs"], "alice", APP, CID, spread=0)
    p.work_dir.mkdir(parents=True)
    p.log_dir.mkdir(parents=True)
    plan = plan_launch(
        container_id=CID,
        user="alice",
        clc_environment={"CP": "{{PWD}}<CPS>{{PWD}}/lib", "ARGS_SEEN": "x"},
        commands=["printf '%s\\n'", "$CP", "'a b'", "'-Dk=v w'", "1><LOG_DIR>/stdout", "2><LOG_DIR>/stderr"],
        tokens=b"HDTS\x00\x00\x00",
        paths=p,
        node=NODE,
    )
    p.script.write_text(plan.script)
    done = subprocess.run(plan.argv, cwd=p.work_dir, env=plan.process_environment, timeout=30)
    assert done.returncode == 0
    assert (p.log_dir / "stdout").read_text().splitlines() == [f"{p.work_dir}:{p.work_dir}/lib", "a b", "-Dk=v w"]
    assert "Launching container" in (p.log_dir / "prelaunch.out").read_text()


def test_the_plan_keeps_the_command_so_a_client_mode_driver_is_found() -> None:
    """The script is what the runtime runs, so the plan keeps the CLC's command: the network policy reads the
    client-mode driver the AM's --arg names (``runtime_spec`` gives it to the spec as ``peers``)."""
    commands = ["{{JAVA_HOME}}/bin/java", "-server", "org.apache.spark.deploy.yarn.ExecutorLauncher",
                "--arg", "'10.213.0.1:40001'", "--properties-file", "{{PWD}}/p", "1><LOG_DIR>/stdout"]  # fmt: skip
    plan = plan_launch(
        container_id=CID, user="alice", clc_environment={}, commands=commands, tokens=b"", paths=paths(), node=NODE
    )
    assert plan.command.startswith("$JAVA_HOME/bin/java -server org.apache.spark.deploy.yarn.ExecutorLauncher")
    assert driver_endpoints([plan.command]) == {("10.213.0.1", 40001)}


def test_a_driver_is_reachable_only_on_the_host_the_application_was_submitted_from() -> None:
    """``runtime_spec`` keeps the driver endpoints of the command only on the client's host (as
    the RM saw the submission): a command naming another host as its "driver" opens nothing."""
    commands = ["java", "ExecutorLauncher", "--arg", "'10.213.0.1:40001'", "--driver-url",
                "spark://CoarseGrainedScheduler@192.168.1.10:40002"]  # fmt: skip
    plan = plan_launch(
        container_id=CID, user="alice", clc_environment={}, commands=commands, tokens=b"", paths=paths(), node=NODE
    )
    c = NMContainer(ContainerId.parse(CID), "alice", Resource(1024, 1), paths(), [])
    settings = ContainerSettings(local_dirs=(Path("/data/local"),), log_dirs=(Path("/data/logs"),))
    assert runtime_spec(c, plan, settings, None, AppNetwork("10.213.0.1", 3)).peers == {("10.213.0.1", 40001)}
    assert runtime_spec(c, plan, settings, None, AppNetwork("192.168.1.10", 3)).peers == {("192.168.1.10", 40002)}
    assert runtime_spec(c, plan, settings, None, AppNetwork("", None)).peers == frozenset()
    assert runtime_spec(c, plan, settings, None, AppNetwork("", 3)).port_slot == 3  # its slot of source ports
