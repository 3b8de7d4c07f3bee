"""The LXC configuration of one container: what it gets, written before ``lxc-execute`` starts it.

What the container gets (``render_config``):

* namespaces: mount, pid, ipc, uts (the hostname stays the host's, so Java and
  Spark resolve it as they would on the host) and cgroup.  **Not network**:
  ``lxc.net.0.type = none`` keeps the host's network namespace, so executors
  listen on the host's addresses as YARN expects;
* a root file system that is an empty read-only directory with mount points:
  the host's ``/usr`` and ``/etc`` bind-mounted read-only (``/bin``, ``/lib``,
  ... are the same symlinks as on a merged-/usr host, read-only binds otherwise),
  secrets in ``/etc`` masked (``DEFAULT_MASKED_PATHS``), ``/proc`` (its ``sys``
  read-only), ``/sys`` and the container's own cgroups read-only, a minimal
  ``/dev`` (``lxc.autodev``) with a private ``/dev/shm``, and a private ``/tmp``;
  the spec's read-only dirs read-only; ``work_dir``, ``log_dir`` and the writable
  dirs read-write, each at the same path as on the host;
* cgroup v1 limits in ``cortex/<id>`` of every hierarchy: ``memory.limit_in_bytes``
  (and ``memory.memsw.limit_in_bytes`` when the kernel accounts swap, so swap
  cannot stretch the limit), ``pids.max`` (init and the wrapper count: 2 tasks),
  and a whitelist of the ``/dev`` nodes above;
* root inside, with the capabilities cut to ``KEPT_CAPABILITIES`` (no sys_admin,
  so no remounting; no net_admin or net_raw on the host's network; no mknod,
  sys_ptrace, dac_read_search, sys_module...) and ``no_new_privs``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from cortex_rm.container.runtime import ContainerSpec, ContainerStartError

#: lxc-execute's fd that carries LXC's log to the runtime; the wrapper closes it.
LXC_LOG_FD: Final = 3
#: The cgroup under which every container's cgroups are made, in every hierarchy.
CGROUP_PARENT: Final = "cortex"
#: Files in the host's /etc that no container reads: they are masked by /dev/null or an empty tmpfs.
DEFAULT_MASKED_PATHS: Final = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
)
#: Capabilities root keeps inside a container (Docker's default set less mknod, net_raw,
#: net_bind_service and setfcap); every other one is dropped from the bounding set.
KEPT_CAPABILITIES: Final = (
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "sys_chroot",
    "audit_write",
)
#: The device nodes a container may use: null, zero, full, random, urandom, tty.
ALLOWED_DEVICES: Final = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm")
#: Top-level host entries that are symlinks into /usr on a merged-/usr system.
_ROOT_LINK_CANDIDATES: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Container paths that the runtime mounts itself; a spec may not put a directory there.
_RESERVED: Final = (PurePosixPath("/proc"), PurePosixPath("/sys"), PurePosixPath("/dev"))
_HOST_RO: Final = (PurePosixPath("/usr"), PurePosixPath("/etc"))

#: Run as pid 2 by init: close the log pipe, shrug off the signals that ``signal``
#: and ``kill`` deliver to every process (a handler, not SIG_IGN, so the command
#: does not inherit it), run the command, then SIGKILL what is left and exit with
#: the command's status (128+signal when a signal ended it).
WRAPPER_SCRIPT: Final = (
    f"exec {LXC_LOG_FD}>&-; trap : HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM; "
    '"$@"; code=$?; kill -KILL -1 2>/dev/null; exit $code'
)

#: The stop hook: copies the memory cgroup's figures before LXC removes the cgroup.
#: LXC appends its own arguments after the two of the config line.  Builtins only,
#: so it costs one ``sh`` when a container ends; the runtime reads the file after
#: lxc-execute has exited.
SNAPSHOT_HOOK: Final = """#!/bin/sh
# lxc.hook.stop of Cortex containers: LXC runs it on the host once the
# container's processes are gone and before it removes the container's cgroups.
# Usage: cgroup-snapshot MEMORY_CGROUP_DIR OUT_FILE [LXC's arguments...]
d=$1
out=$2
{
  for f in memory.oom_control memory.failcnt memory.max_usage_in_bytes memory.limit_in_bytes; do
    if [ -r "$d/$f" ]; then
      while read -r line; do echo "$f $line"; done < "$d/$f"
    fi
  done
} > "$out" 2>/dev/null
exit 0
"""

SAFE_PATH = re.compile(r"/[A-Za-z0-9_.,:@+=/-]*")


@dataclass(frozen=True)
class HostLayout:
    """What a container's root file system copies from the host (looked up once per runtime)."""

    #: Top-level names that are symlinks on the host, with their targets (``bin -> usr/bin``).
    root_links: tuple[tuple[str, str], ...]
    #: Top-level names that are real directories on the host and get read-only binds.
    root_dirs: tuple[str, ...]
    #: Masked paths that exist on the host, and whether each is a directory.
    masked: tuple[tuple[str, bool], ...]
    #: The kernel accounts swap in the memory cgroup (``memory.memsw.*`` exists).
    swap_accounting: bool
    hostname: str

    @classmethod
    def of_host(cls, cgroup_root: Path, masked_paths: Sequence[str], hostname: str) -> HostLayout:
        """Look at this host: a handful of ``lstat`` calls."""
        links, dirs = [], []
        for name in _ROOT_LINK_CANDIDATES:
            path = Path("/") / name
            if path.is_symlink():
                links.append((name, os.readlink(path)))
            elif path.is_dir():
                dirs.append(name)
        masked = tuple((p, Path(p).is_dir()) for p in masked_paths if os.path.lexists(p))
        swap = (cgroup_root / "memory" / "memory.memsw.limit_in_bytes").exists()
        return cls(tuple(links), tuple(dirs), masked, swap, hostname)


@dataclass(frozen=True)
class Binds:
    """The spec's own directories, checked and in mount order (parents before children)."""

    writable: tuple[PurePosixPath, ...]
    readonly: tuple[PurePosixPath, ...]

    def in_mount_order(self) -> list[tuple[PurePosixPath, bool]]:
        """(path, writable) pairs, shallow paths first so that a nested bind lands on its parent's."""
        both = [(p, True) for p in self.writable] + [(p, False) for p in self.readonly]
        return sorted(both, key=lambda e: (len(e[0].parts), str(e[0])))


def check_spec_paths(spec: ContainerSpec) -> Binds:
    """The directories to bind for ``spec``; raises ``ContainerStartError`` naming a bad one.

    Each must be an existing directory, given without symlinks (it is mounted at
    the same path inside) and in characters that an ``lxc.mount.entry`` carries
    as they are; none may be under /proc, /sys or /dev; writable ones not under
    the read-only host /usr or /etc.  Read-only dirs under /usr or /etc are
    visible already and need no bind.
    """
    writable = list(dict.fromkeys([spec.work_dir, spec.log_dir, *spec.writable_dirs]))
    readonly = [p for p in dict.fromkeys(spec.readonly_dirs) if p not in writable]
    for what, path in spec.paths():
        text = str(path)
        if not SAFE_PATH.fullmatch(text) or os.path.normpath(text) != text or text == "/":
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text!r} must be a normalised absolute path of "
                "letters, digits and _.,:@+=- (an LXC mount entry carries no others)"
            )
        pure = PurePosixPath(text)
        if any(pure == r or r in pure.parents for r in _RESERVED):
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is under /proc, /sys or /dev")
        if path in writable and any(pure == r or r in pure.parents for r in _HOST_RO):
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is under the host's read-only /usr or /etc")
        if not path.is_dir():
            raise ContainerStartError(f"{spec.container_id}: {what} {text} is not an existing directory")
        if path.resolve() != path:
            raise ContainerStartError(
                f"{spec.container_id}: {what} {text} goes through a symlink (to {path.resolve()}); give the real path"
            )
    visible = [p for p in readonly if not any(r in PurePosixPath(p).parents for r in _HOST_RO)]
    return Binds(tuple(PurePosixPath(p) for p in writable), tuple(PurePosixPath(p) for p in visible))


def _entry(source: str, target: PurePosixPath | str, fstype: str, options: str) -> str:
    relative = str(target).lstrip("/")
    return f"lxc.mount.entry = {source} {relative} {fstype} {options} 0 0"


def render_config(
    *,
    spec: ContainerSpec,
    binds: Binds,
    host: HostLayout,
    rootfs: Path,
    snapshot_hook: Path,
    snapshot_file: Path,
    cgroup_root: Path,
) -> str:
    """The LXC config of one container (see the module docstring for what each part is for)."""
    cid = spec.container_id
    tmpfs = f"rw,nosuid,nodev,mode=1777,size={spec.memory_limit_bytes}"
    lines = [
        f"# Cortex RM container {cid}: written by LxcRuntime, removed when the container ends",
        f"lxc.uts.name = {host.hostname}",
        f"lxc.rootfs.path = dir:{rootfs}",
        "lxc.rootfs.options = ro",
        "# the host's network namespace (no network isolation yet)",
        "lxc.net.0.type = none",
        "lxc.console.path = none",
        "lxc.tty.max = 0",
        "lxc.autodev = 1",
        "lxc.mount.auto = proc:mixed sys:ro cgroup:ro",
        _entry("/usr", "usr", "none", "ro,bind"),
        _entry("/etc", "etc", "none", "ro,bind"),
        *(_entry(f"/{name}", name, "none", "ro,bind") for name in host.root_dirs),
        _entry("tmpfs", "tmp", "tmpfs", tmpfs),
        _entry("tmpfs", "dev/shm", "tmpfs", tmpfs + ",create=dir"),
        *(
            _entry("tmpfs", path, "tmpfs", "ro,size=4k") if is_dir else _entry("/dev/null", path, "none", "ro,bind")
            for path, is_dir in host.masked
        ),
        *(
            _entry(str(path), path, "none", ("rw" if writable else "ro") + ",bind,create=dir")
            for path, writable in binds.in_mount_order()
        ),
        f"lxc.cgroup.dir.container = {CGROUP_PARENT}/{cid}",
        f"lxc.cgroup.dir.monitor = {CGROUP_PARENT}/{cid}.monitor",
        f"lxc.cgroup.memory.limit_in_bytes = {spec.memory_limit_bytes}",
        *([f"lxc.cgroup.memory.memsw.limit_in_bytes = {spec.memory_limit_bytes}"] if host.swap_accounting else []),
        f"lxc.cgroup.pids.max = {spec.pids_limit}",
        "lxc.cgroup.devices.deny = a",
        *(f"lxc.cgroup.devices.allow = {d}" for d in ALLOWED_DEVICES),
        f"lxc.cap.keep = {' '.join(KEPT_CAPABILITIES)}",
        "lxc.no_new_privs = 1",
        f"lxc.hook.stop = {snapshot_hook} {cgroup_root / 'memory' / CGROUP_PARENT / cid} {snapshot_file}",
    ]
    return "\n".join(lines) + "\n"


def prepare_rootfs(rootfs: Path, binds: Binds, host: HostLayout) -> None:
    """Make the empty root file system: mount points and the host's top-level symlinks.

    Bind targets below /tmp are made by LXC in the private /tmp (``create=dir``);
    targets below /usr or /etc exist through those binds; any other is made here,
    in a tree that holds no symlink but the top-level ones it never descends.
    """
    for name in ("usr", "etc", "proc", "sys", "dev", "tmp", "root", *host.root_dirs):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    for name, target in host.root_links:
        (rootfs / name).symlink_to(target)
    skip = {"usr", "etc", "tmp", "proc", "sys", "dev", *host.root_dirs, *(n for n, _ in host.root_links)}
    for path, _ in binds.in_mount_order():
        if path.parts[1] not in skip:
            (rootfs / str(path).lstrip("/")).mkdir(parents=True, exist_ok=True)


def launch_argv(spec: ContainerSpec, lxc_execute: str, config: Path, lxcpath: Path) -> list[str]:
    """lxc-execute's argv: the container, LXC's log on fd 3, then the wrapper, env and the command."""
    env = [f"{k}={v}" for k, v in spec.env.items()]
    return [
        lxc_execute,
        "-n",
        spec.container_id,
        "-P",
        str(lxcpath),
        "-f",
        str(config),
        "-o",
        f"/proc/self/fd/{LXC_LOG_FD}",
        "-l",
        "NOTICE",
        "--",
        "/usr/bin/env",
        "-i",
        "-C",
        str(spec.work_dir),
        "/bin/sh",
        "-c",
        WRAPPER_SCRIPT,
        "cortex-container",
        "/usr/bin/env",
        "-i",
        *env,
        *spec.command,
    ]
