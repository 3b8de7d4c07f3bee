"""What a container is launched with: YARN's environment, expansion and ``launch_container.sh``.

Pure functions, no I/O: ``ContainerManager`` writes what they return.  They
reproduce what YARN's NodeManager gives a container (``ContainerLaunch`` in
hadoop-yarn-server-nodemanager), which is what Spark's ApplicationMaster and
executors rely on:

Expansion (``expand``), applied to every environment value and command token of
the ContainerLaunchContext, in this order:

1. ``<LOG_DIR>`` -> the container's log dir (Spark's ``1><LOG_DIR>/stdout``);
2. ``<CPS>`` -> ``:`` (Java's ``File.pathSeparator`` on Linux);
3. ``{{`` -> ``$`` and ``}}`` -> nothing, so ``{{PWD}}`` becomes ``$PWD``, which the
   shell expands when the script runs.

Environment (``launch_environment``):

* YARN's non-modifiable variables, which override the CLC's: ``CONTAINER_ID``,
  ``NM_HOST``, ``NM_PORT``, ``NM_HTTP_PORT``, ``LOCAL_DIRS`` (comma-separated
  application dirs, which Spark requires), ``LOCAL_USER_DIRS``, ``LOG_DIRS``,
  ``USER``, ``LOGNAME``, ``HOME``, ``PWD``, ``HADOOP_TOKEN_FILE_LOCATION``
  (``<PWD>/container_tokens``), ``JVM_PID`` (``$$``), and ``HADOOP_CONF_DIR``
  when the NodeManager has one;
* the whitelist (``yarn.nodemanager.env-whitelist``), inherited from the
  NodeManager when the CLC does not set them; ``JAVA_HOME`` is the configured JVM;
* the CLC's own variables, expanded, ordered so that a variable is exported after
  the variables its value refers to (as YARN's ``orderEnvByDependencies``).

The script (``launch_script``) is YARN's: ``set -o pipefail -e``; the script's own
output into ``prelaunch.out``/``prelaunch.err`` in the log dir; one
``export K="v"`` per variable (double quotes: ``$PWD`` expands at run time); then
``exec /bin/bash -c "<tokens joined by spaces>"`` with the joined command
verbatim: Spark quotes its arguments for exactly this context (``escapeForShell``),
so no quoting may be added.  Local resources are linked into the work dir by the
localizer before the script runs, so the script has no ``ln`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

LAUNCH_SCRIPT = "launch_container.sh"
FILE_CACHE = "filecache"
TOKENS_FILE = "container_tokens"
TMP_DIR = "tmp"
PRELAUNCH_OUT = "prelaunch.out"
PRELAUNCH_ERR = "prelaunch.err"

#: yarn.nodemanager.env-whitelist (YARN's default): inherited when the CLC does not set them.
ENV_WHITELIST: Final = (
    "JAVA_HOME",
    "HADOOP_COMMON_HOME",
    "HADOOP_HDFS_HOME",
    "HADOOP_CONF_DIR",
    "CLASSPATH_PREPEND_DISTCACHE",
    "HADOOP_YARN_HOME",
    "HADOOP_HOME",
    "PATH",
    "LANG",
    "TZ",
)
#: The PATH a container gets when the NodeManager itself has none.
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The variables the NodeManager sets and a CLC cannot change (``ApplicationConstants.Environment``).
NON_MODIFIABLE: Final = frozenset(
    {
        "CONTAINER_ID",
        "NM_HOST",
        "NM_PORT",
        "NM_HTTP_PORT",
        "LOCAL_DIRS",
        "LOCAL_USER_DIRS",
        "LOG_DIRS",
        "USER",
        "LOGNAME",
        "HOME",
        "PWD",
        "HADOOP_TOKEN_FILE_LOCATION",
        "JVM_PID",
        "HADOOP_CONF_DIR",
    }
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class LaunchContextError(ValueError):
    """The ContainerLaunchContext cannot be turned into a launch (bad variable name, no command)."""


@dataclass(frozen=True)
class ContainerPaths:
    """Where one container lives on this node (all absolute host paths)."""

    #: The container's working dir, ``<local_dir>/usercache/<user>/appcache/<appId>/<containerId>``.
    work_dir: Path
    #: The application's dir in every local dir (``LOCAL_DIRS``), the work dir's parent among them.
    app_dirs: tuple[Path, ...]
    #: ``<local_dir>/usercache/<user>`` in every local dir (``LOCAL_USER_DIRS``).
    user_dirs: tuple[Path, ...]
    #: The container's log dir that ``<LOG_DIR>`` names, ``<log_dir>/<appId>/<containerId>``.
    log_dir: Path
    #: The container's log dir in every log dir (``LOG_DIRS``), ``log_dir`` among them.
    log_dirs: tuple[Path, ...]

    @property
    def tokens_file(self) -> Path:
        return self.work_dir / TOKENS_FILE

    @property
    def public_cache(self) -> Path:
        """``<local_dir>/filecache``: the node's cache of PUBLIC resources (``localizer.py``)."""
        return self.user_dirs[0].parent.parent / FILE_CACHE

    @property
    def private_cache(self) -> Path:
        """``<local_dir>/usercache/<user>/filecache``: the user's cache of PRIVATE resources."""
        return self.user_dirs[0] / FILE_CACHE

    @property
    def application_cache(self) -> Path:
        """``<app_dir>/filecache``: the application's cache of APPLICATION resources."""
        return self.app_dirs[0] / FILE_CACHE

    @property
    def script(self) -> Path:
        return self.work_dir / LAUNCH_SCRIPT


def container_paths(
    local_dirs: Sequence[Path], log_dirs: Sequence[Path], user: str, app_id: str, container_id: str, spread: int
) -> ContainerPaths:
    """YARN's layout for one container; ``spread`` (e.g. the container's sequence number)
    picks which local dir holds the work dir and which log dir ``<LOG_DIR>`` is, so that
    containers spread over the disks."""
    if not local_dirs or not log_dirs:
        raise ValueError("a NodeManager needs at least one local dir and one log dir")
    user_dirs = tuple(d / "usercache" / user for d in local_dirs)
    app_dirs = tuple(u / "appcache" / app_id for u in user_dirs)
    container_log_dirs = tuple(d / app_id / container_id for d in log_dirs)
    return ContainerPaths(
        work_dir=app_dirs[spread % len(app_dirs)] / container_id,
        app_dirs=app_dirs,
        user_dirs=user_dirs,
        log_dir=container_log_dirs[spread % len(container_log_dirs)],
        log_dirs=container_log_dirs,
    )


@dataclass(frozen=True)
class NodeFacts:
    """What the NodeManager tells every container about itself."""

    nm_host: str
    nm_port: int
    nm_http_port: int
    java_home: str
    user_home_dir: str = "/home/"
    #: The NodeManager's own environment (the whitelist and HADOOP_CONF_DIR come from it).
    nm_environment: Mapping[str, str] = field(default_factory=dict)


def expand(value: str, log_dir: str) -> str:
    """YARN's ``expandEnvironment`` on Linux (see the module docstring)."""
    return value.replace("<LOG_DIR>", log_dir).replace("<CPS>", ":").replace("{{", "$").replace("}}", "")


def base_environment(node: NodeFacts) -> dict[str, str]:
    """The environment the launch script starts with: the whitelisted variables of the
    NodeManager, ``JAVA_HOME`` being the configured JVM and ``PATH`` never missing.
    (A CLC value like ``PATH=$PATH:/x`` refers to these.)"""
    env = {k: node.nm_environment[k] for k in ENV_WHITELIST if k in node.nm_environment}
    env["JAVA_HOME"] = node.java_home
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def nm_variables(container_id: str, user: str, paths: ContainerPaths, node: NodeFacts) -> dict[str, str]:
    """YARN's non-modifiable variables for one container."""
    env = {
        "CONTAINER_ID": container_id,
        "NM_HOST": node.nm_host,
        "NM_PORT": str(node.nm_port),
        "NM_HTTP_PORT": str(node.nm_http_port),
        "LOCAL_DIRS": ",".join(str(d) for d in paths.app_dirs),
        "LOCAL_USER_DIRS": ",".join(f"{d}/" for d in paths.user_dirs),
        "LOG_DIRS": ",".join(str(d) for d in paths.log_dirs),
        "USER": user,
        "LOGNAME": user,
        "HOME": node.user_home_dir,
        "PWD": str(paths.work_dir),
        "HADOOP_TOKEN_FILE_LOCATION": str(paths.tokens_file),
        "JVM_PID": "$$",
    }
    if "HADOOP_CONF_DIR" in node.nm_environment:
        env["HADOOP_CONF_DIR"] = node.nm_environment["HADOOP_CONF_DIR"]
    return env


def references(value: str) -> set[str]:
    """The variables a (expanded) value refers to, ``$X`` or ``${X}``."""
    return {m.group(1) or m.group(2) for m in _REFERENCE.finditer(value)}


def order_by_dependencies(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """``env``'s items so that each comes after the variables of ``env`` its value refers to.

    A stable depth-first order: variables keep their given order unless one must move
    after another; a variable referring to itself (``PATH=$PATH:...``) or a cycle keeps
    the given order for the variables in the cycle.
    """
    ordered: list[tuple[str, str]] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in visiting:
            return
        visiting.add(name)
        for dep in sorted(references(env[name]) & env.keys(), key=list(env).index):
            if dep != name:
                visit(dep)
        visiting.discard(name)
        done.add(name)
        ordered.append((name, env[name]))

    for name in env:
        visit(name)
    return ordered


def launch_environment(
    clc_environment: Mapping[str, str],
    container_id: str,
    user: str,
    paths: ContainerPaths,
    node: NodeFacts,
) -> list[tuple[str, str]]:
    """Every variable the script exports, in export order (see the module docstring)."""
    for name in clc_environment:
        if not _ENV_NAME.match(name):
            raise LaunchContextError(f"environment variable name {name!r} is not a valid shell identifier")
    nm_vars = nm_variables(container_id, user, paths, node)
    inherited = {k: v for k, v in base_environment(node).items() if k not in clc_environment and k not in nm_vars}
    log_dir = str(paths.log_dir)
    own = {k: expand(v, log_dir) for k, v in clc_environment.items() if k not in NON_MODIFIABLE}
    return list(nm_vars.items()) + list(inherited.items()) + order_by_dependencies(own)


def launch_command(commands: Iterable[str], log_dir: Path) -> str:
    """The CLC's command tokens, expanded and joined by single spaces, verbatim."""
    tokens = [expand(t, str(log_dir)) for t in commands]
    if not any(t.strip() for t in tokens):
        raise LaunchContextError("the ContainerLaunchContext has no command")
    return " ".join(tokens)


def launch_script(environment: Iterable[tuple[str, str]], command: str, log_dir: Path) -> str:
    """The text of ``launch_container.sh`` (see the module docstring)."""
    lines = [
        "#!/bin/bash",
        "",
        "set -o pipefail -e",
        f'export PRELAUNCH_OUT="{log_dir / PRELAUNCH_OUT}"',
        'exec >"${PRELAUNCH_OUT}"',
        f'export PRELAUNCH_ERR="{log_dir / PRELAUNCH_ERR}"',
        'exec 2>"${PRELAUNCH_ERR}"',
        'echo "Setting up env variables"',
    ]
    lines += [f'export {name}="{value}"' for name, value in environment]
    lines += ['echo "Launching container"', f'exec /bin/bash -c "{command}"', ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class LaunchPlan:
    """Everything ``ContainerManager`` writes and runs for one container."""

    paths: ContainerPaths
    #: The process environment the script starts with (``base_environment``).
    process_environment: dict[str, str]
    #: What the script exports, in order.
    environment: list[tuple[str, str]]
    script: str
    #: ``<work_dir>/container_tokens``: the CLC's Credentials bytes.
    tokens: bytes
    #: The CLC's command as the script runs it (``launch_command``).
    command: str = ""

    @property
    def argv(self) -> list[str]:
        """How the runtime starts the container: bash running the script."""
        return ["/bin/bash", str(self.paths.script)]


#: Credentials with no tokens and no secrets (what Spark sends without security).
EMPTY_CREDENTIALS: Final = b"HDTS\x00\x00\x00"


def plan_launch(
    *,
    container_id: str,
    user: str,
    clc_environment: Mapping[str, str],
    commands: Sequence[str],
    tokens: bytes,
    paths: ContainerPaths,
    node: NodeFacts,
) -> LaunchPlan:
    """The launch of one container from its CLC's environment, command and tokens."""
    environment = launch_environment(clc_environment, container_id, user, paths, node)
    command = launch_command(commands, paths.log_dir)
    return LaunchPlan(
        paths=paths,
        process_environment=base_environment(node),
        environment=environment,
        script=launch_script(environment, command, paths.log_dir),
        tokens=tokens or EMPTY_CREDENTIALS,
        command=command,
    )
