"""The seccomp profile of every container (``lxc.seccomp.profile``, LXC's version-2 text format).

A deny list: the system calls below fail with EPERM (``errno 1``), the rest are
allowed.  It starts from LXC's own default for containers (kexec_load,
open_by_handle_at, init_module, finit_module, delete_module) and adds what a
JVM, a Python worker or a shell never needs and what has been a door into the
kernel or out of the container:

* the kernel keyring (keyctl, add_key, request_key) and BPF (bpf), perf counters
  (perf_event_open), userfaultfd and io_uring (io_uring_setup, io_uring_enter,
  io_uring_register): large attack surface, no use to Spark;
* debugging other processes (ptrace, process_vm_readv, process_vm_writev, kcmp);
* new namespaces and mounts: unshare, setns, mount, umount2, pivot_root, fsopen,
  fsmount, move_mount, open_tree, and ``clone`` with CLONE_NEWUSER (a user
  namespace of its own would hand the container's root every capability in it);
  ``clone3`` passes its flags in memory a filter cannot read, so it answers
  ENOSYS (``errno 38``), on which glibc falls back to ``clone``;
* swap, accounting, reboot and the clock (swapon, swapoff, acct, reboot,
  settimeofday, clock_settime, clock_adjtime, adjtimex): the capabilities are
  gone already, this closes them twice.

Java 17 and Python 3.11 run under it (``tests/integration/test_container_sandbox.py``
runs ``java -version`` and a threaded, forking Python in a container).
"""

from __future__ import annotations

from typing import Final

#: LXC's default deny list for containers.
LXC_DEFAULT_DENIED: Final = ("kexec_load", "open_by_handle_at", "init_module", "finit_module", "delete_module")
#: What Cortex denies on top of LXC's list (see the module docstring).
CORTEX_DENIED: Final = (
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "swapon",
    "swapoff",
    "acct",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
)
CLONE_NEWUSER: Final = 0x10000000
EPERM: Final = 1
ENOSYS: Final = 38


def render_profile() -> str:
    """The profile's text (LXC ``2`` / ``denylist`` format, every architecture)."""
    lines = ["2", "denylist", "[all]"]
    lines += [f"{name} errno {EPERM}" for name in (*LXC_DEFAULT_DENIED, *CORTEX_DENIED)]
    lines.append(f"clone3 errno {ENOSYS}")
    # argument 0 of clone is its flags: refused when CLONE_NEWUSER is among them
    lines.append(f"clone errno {EPERM} [0,{CLONE_NEWUSER:#x},SCMP_CMP_MASKED_EQ,{CLONE_NEWUSER:#x}]")
    return "\n".join(lines) + "\n"
