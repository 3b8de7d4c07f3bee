"""NodeManager recovery in the ContainerManager: records kept while containers run, and a restarted
manager that takes back a running container and reports ended ones, on a Clock with a fake process
table (FakeRuntime for the containers it starts, RecoveredContainer for those it takes back)."""

from __future__ import annotations

from pathlib import Path

from cortex_rm.container.container_recovery import cache_entries_linked, recover_containers
from cortex_rm.container.nm_recovery import (
    EXIT_CODE_FILE,
    LOST_EXIT_CODE,
    Completed,
    ContainerRecord,
    ContainerRecordStore,
    Reattach,
)
from cortex_rm.container.recovered_container import POLL_S, RecoveredContainer
from cortex_rm.container.runtime import RunningContainer
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from tests.support.nm_requests import APP, cid
from cortex_rm.container.nm_container import NMContainerState as NodeManagerState
from tests.unit.test_container_manager import Node


class _ProcessTable:
    """Which recovered inits run (by container id); what their wrappers wrote."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.signals: list[tuple[str, int]] = []

    def reattach(self, node: Node, record: ContainerRecord) -> RunningContainer:
        cid_ = record.container_id

        def kill_init() -> None:
            self.running.discard(cid_)

        return RecoveredContainer(
            cid_, record.pid or 0, node.clock,
            alive=lambda: cid_ in self.running,
            exit_code=lambda: int(p.read_text()) if (p := Path(record.work_dir) / EXIT_CODE_FILE).exists() else None,
            signal_others=lambda sig: self.signals.append((cid_, sig)), kill_init=kill_init, finished=lambda: None,
        )  # fmt: skip


def _store(node: Node) -> ContainerRecordStore:
    return ContainerRecordStore(node.tmp / "nm-recovery")


def test_a_container_has_a_record_while_it_runs(tmp_path: Path) -> None:
    """Written before the runtime starts it, with its grant and dirs; its pid once it runs; gone once DONE."""
    node = Node(tmp_path)
    node.cm.records = store = _store(node)
    node.start(1, memory_mb=2048)
    (record,) = store.load()
    assert (record.container_id, record.user, record.memory_mb, record.pid) == (str(cid(1)), "alice", 2048, None)
    assert record.work_dir == str(node.app_dir("local2") / str(cid(1)))
    node.clock.advance(0)
    (record,) = store.load()
    assert record.pid == node.cm.containers[cid(1)].running.pid  # type: ignore[union-attr]
    node.runtime.finish(str(cid(1)), 0)
    assert node.state(1) is NodeManagerState.DONE
    assert store.load() == []


def test_a_restarted_manager_takes_back_running_containers_and_reports_ended_ones(tmp_path: Path) -> None:
    """Three containers ran when the daemon died: one still runs (RUNNING, then complete with the code
    its wrapper writes), one ended with code 3 (complete with 3), one left no code (LOST, 154)."""
    before = Node(tmp_path)
    before.cm.records = _store(before)
    for seq in (1, 2, 3):
        before.start(seq)
    before.clock.advance(0)
    records = {r.container_id: r for r in _store(before).load()}
    assert len(records) == 3 and all(r.pid is not None for r in records.values())
    # the daemon dies: container 1 runs on, 2 wrote its exit code, 3 was killed as a whole
    Path(records[str(cid(2))].work_dir, EXIT_CODE_FILE).write_text("3\n")
    procs = _ProcessTable()
    procs.running.add(str(cid(1)))

    after = Node(tmp_path)
    after.cm.records = store = _store(after)
    decisions = recover_containers(
        after.cm, store, lambda r: procs.reattach(after, r), alive=lambda r: r.container_id in procs.running
    )
    assert [type(d) for d in decisions] == [Reattach, Completed, Completed]
    reports = {r.container_id: r for r in after.cm.statuses_for_heartbeat()}
    assert reports[cid(1)].state is ContainerState.RUNNING
    assert (reports[cid(2)].state, reports[cid(2)].exit_status) == (ContainerState.COMPLETE, 3)
    assert (reports[cid(3)].state, reports[cid(3)].exit_status) == (ContainerState.COMPLETE, LOST_EXIT_CODE)
    assert "non-zero exit code 154" in reports[cid(3)].diagnostics
    assert reports[cid(1)].resource == before.cm.containers[cid(1)].resource
    assert [r.container_id for r in store.load()] == [str(cid(1))]  # the ended ones are DONE here
    # the recovered one ends: its real exit status is reported
    Path(records[str(cid(1))].work_dir, EXIT_CODE_FILE).write_text("0\n")
    procs.running.clear()
    after.clock.advance(POLL_S)
    assert after.state(1) is NodeManagerState.DONE
    assert (after.report(1).state, after.report(1).exit_status) == (ContainerState.COMPLETE, 0)
    assert store.load() == []


def test_a_recovered_container_of_a_finished_application_is_killed_by_the_cleanup(tmp_path: Path) -> None:
    """The RM's cleanup of the application kills a re-attached container (SIGTERM, then init SIGKILLed
    after the grace) and it ends KILLED_AFTER_APP_COMPLETION, its app dirs deleted."""
    before = Node(tmp_path)
    before.cm.records = _store(before)
    before.start(1)
    before.clock.advance(0)
    procs = _ProcessTable()
    procs.running.add(str(cid(1)))
    after = Node(tmp_path)
    recover_containers(after.cm, _store(after), lambda r: procs.reattach(after, r), alive=lambda r: True)
    done = after.cm.cleanup_application(APP)
    assert procs.signals == [(str(cid(1)), 15)]
    after.clock.advance(after.settings.kill_grace_s)
    after.clock.advance(0)
    assert done.called
    assert after.report(1).exit_status == ContainerExitStatus.KILLED_AFTER_APP_COMPLETION
    assert not after.app_dir("local2").exists()


def test_cache_entries_linked_from_a_work_dir(tmp_path: Path) -> None:
    """The entries (``<cache>/<n>``) a work dir's links point to; other links and files are not."""
    cache = tmp_path / "filecache"
    (cache / "7" / "pyspark.zip").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyspark.zip").symlink_to(cache / "7" / "pyspark.zip")
    (work / "elsewhere").symlink_to(tmp_path)
    (work / "launch_container.sh").write_text("")
    assert cache_entries_linked(work) == {cache / "7"}
