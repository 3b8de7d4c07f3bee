"""Run the real ``spark-submit`` of the installed pyspark against a YARN ResourceManager.

The client configuration comes from a conf dir (``yarn-site.xml``/``core-site.xml`` and
``spark-defaults.conf``, written by ``cortex-rm client-config``, which also uploaded the
jars of pyspark once as ``spark.yarn.archive``); this module never writes one.  It is used
as a user uses it: ``HADOOP_CONF_DIR`` and ``SPARK_CONF_DIR`` both name it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.java import java_home, spark_home

# Executors and the cluster-mode driver run Debian's python3 inside the containers;
# a client-mode driver runs the test's own interpreter.
PYTHON_CONF = {"spark.pyspark.python": "/usr/bin/python3"}
# Small executors, so a three- or four-node test cluster holds a job's AM and executors.
EXECUTORS = {
    "spark.executor.instances": "2",
    "spark.executor.memory": "512m",
    "spark.executor.cores": "1",
    "spark.driver.memory": "512m",
    "spark.yarn.am.memory": "512m",
    "spark.ui.enabled": "false",
}

# ``ApplicationId.toString``: "application_" + cluster timestamp + "_" + sequence number
# zero-padded to at least four digits.
APPLICATION_ID = re.compile(r"\bapplication_\d+_\d{4,}\b")


def spark_submit_env(conf_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``spark-submit``: ``HADOOP_CONF_DIR``/``YARN_CONF_DIR``/``SPARK_CONF_DIR``
    = ``conf_dir``, ``JAVA_HOME``, ``SPARK_HOME`` = the pyspark package, ``PYSPARK_PYTHON`` = this
    interpreter (the conf dir's ``spark.pyspark.python`` wins over it), then ``extra``."""
    env = dict(os.environ)
    env.update(
        HADOOP_CONF_DIR=str(conf_dir),
        YARN_CONF_DIR=str(conf_dir),
        SPARK_CONF_DIR=str(conf_dir),
        JAVA_HOME=str(java_home()),
        SPARK_HOME=str(spark_home()),
        PYSPARK_PYTHON=sys.executable,
    )
    if extra:
        env.update(extra)
    return env


def spark_submit_command(
    app_file: Path | str,
    *,
    deploy_mode: str = "cluster",
    conf: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    options: Sequence[str] = (),
) -> list[str]:
    """The ``spark-submit --master yarn`` command line, with ``conf`` entries as ``--conf`` and
    ``options`` (e.g. ``--py-files x.zip``) before the application."""
    if deploy_mode not in ("cluster", "client"):
        raise ValueError(f"deploy_mode must be 'cluster' or 'client', not {deploy_mode!r}")
    settings = dict(conf or {})
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", "yarn", "--deploy-mode", deploy_mode]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, *options, str(app_file), *args]


def spark_submit(
    conf_dir: Path,
    app_file: Path | str,
    *,
    deploy_mode: str = "cluster",
    conf: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``spark-submit --master yarn --deploy-mode <deploy_mode> [--conf k=v ...] app_file args``
    with the Hadoop configuration in ``conf_dir`` and return its exit status and output.

    ``spark-submit`` runs in its own process group: in client mode it starts the Python
    driver as a child, so on timeout the whole group is killed and
    :class:`subprocess.TimeoutExpired` is raised with the output collected so far.
    """
    command = spark_submit_command(app_file, deploy_mode=deploy_mode, conf=conf, args=args, options=options)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=spark_submit_env(conf_dir, env),
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    except BaseException:  # e.g. KeyboardInterrupt: leave no spark-submit running
        _kill_group(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the process group ``proc`` leads. Only called before ``proc`` is reaped, so the
    group id is still ours."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def application_id_from_output(text: str) -> str | None:
    """The first ``application_<clusterTimestamp>_<nnnn>`` id in ``spark-submit``'s output
    (e.g. from ``Submitted application application_1732406400000_0001``), or ``None``."""
    match = APPLICATION_ID.search(text)
    return match.group(0) if match else None
