"""``cortex-rm payouts`` and ``cortex-rm ledger verify``: the uptime ledger from the command line.

``payouts (--workdir DIR | --rm-web HOST:PORT) [--start MS --end MS] [--json]`` asks
the RM's REST API (``/ws/v1/cortex/payouts``) and prints one line per node: its
YARN NodeId, its ring id, its uptime in seconds and its share (``--json``: a list
of objects with the keys ``node``, ``ring_id``, ``uptime_s``, ``share``).

``ledger verify (--workdir DIR | --config FILE) [--url URL]`` opens the ledger's
database itself (the RM's ``[accounting] ledger_url``; it may be running) and
trusts nothing in it: every entry is rehashed, the tree rebuilt and every stored
hash and signed tree head compared (``MerkleLog.verify_all``), every membership
change and statement must be signed by a resource manager, and every closed
period's statement is recomputed from its log prefix.  Exit status 0 only when
all of it holds; 1 with the list of what does not.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError

from cortex_rm.accounting.attestations import key_identity
from cortex_rm.accounting.ledger import MerkleLog
from cortex_rm.accounting.ledger_errors import LedgerError
from cortex_rm.accounting.ledger_reading import read_ledger, recompute_statement, signer_keys
from cortex_rm.accounting.ledger_store import SqlLedgerStore
from cortex_rm.accounting.tree_heads import keys_by_id
from cortex_rm.config import ConfigError, load_config

DEFAULT_TIMEOUT_S = 60.0  # a payout of the current period reads the whole log


class LedgerCliError(Exception):
    """What went wrong, and what to do about it."""


def fetch_payouts(web: str, start: int | None, end: int | None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The ``payouts`` document of the RM whose web address is ``web`` (host:port)."""
    query = f"?start={start}&end={end}" if start is not None and end is not None else ""
    url = f"http://{web}/ws/v1/cortex/payouts{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:2000].decode("utf-8", errors="replace")
        try:
            detail = json.loads(detail)["RemoteException"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise LedgerCliError(f"{url}: HTTP {e.code}: {detail}") from None
    except (OSError, ValueError) as e:
        raise LedgerCliError(f"cannot read {url}: {e}; is the RM up at {web}?") from None
    payouts = document.get("payouts") if isinstance(document, dict) else None
    if not isinstance(payouts, dict) or not isinstance(payouts.get("node"), list):
        raise LedgerCliError(f"{url} did not answer a payouts document")
    return payouts


def print_payouts(payouts: dict[str, Any], as_json: bool, out: IO[str]) -> None:
    rows = [
        {"node": n.get("node", ""), "ring_id": n.get("ringId", ""), "uptime_s": n.get("uptimeS", 0.0), "share": n.get("share", 0.0)}
        for n in payouts["node"]
    ]
    if as_json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return
    state = "closed (signed statement)" if payouts.get("closed") else "open (as the ledger stands now)"
    out.write(f"period [{payouts.get('start')}, {payouts.get('end')}) ms, {state}, from {payouts.get('logSize')} ledger entries\n")
    out.write(f"{'NODE':<24} {'RING ID':<40} {'UPTIME S':>12} {'SHARE':>8}\n")
    for row in rows:
        out.write(f"{row['node'] or '-':<24} {row['ring_id']:<40} {row['uptime_s']:>12.1f} {row['share']:>8.4f}\n")
    if not rows:
        out.write("(no attested uptime in this period yet: witnesses report once an attestation interval)\n")


def verify_ledger(url: str, successors: int, resource_managers: frozenset[int], out: IO[str]) -> bool:
    """Check the whole ledger at ``url`` (module doc); whether it holds."""
    store = SqlLedgerStore(url)
    more = 0
    try:
        log = MerkleLog(store)
        size = log.size()
        out.write(f"ledger {url}: {size} entries; rebuilding the tree from them\n")
        trusted = signer_keys(log, resource_managers)
        keys = [key_identity(key)[0] for key in trusted]
        audit = log.verify_all(keys_by_id(keys))
        contents = read_ledger(log, size, lambda key: key in trusted)
        problems = list(audit.problems) + list(contents.problems)
        more = audit.more_problems
        signers = ", ".join(f"{key_identity(k)[1]:040x}" for k in sorted(trusted)) or "nobody (no membership change)"
        out.write(f"  {audit.tree_heads_checked} signed tree heads checked; resource manager keys: {signers}\n")
        out.write(f"  entries: {', '.join(f'{kind} {count}' for kind, count in sorted(contents.counts.items()))}\n")
        if audit.ok:  # recomputing on a damaged log would only repeat the damage
            for index, statement in contents.statements:
                error = recompute_statement(log, contents, statement, successors, lambda key: key in trusted)
                period = f"[{statement.period.start_ms}, {statement.period.end_ms})"
                if error is None:
                    out.write(f"  period {period}: the statement at entry {index} recomputes exactly ({len(statement.uptimes)} nodes)\n")
                else:
                    problems.append(f"entry {index}: {error}")
    except LedgerError as e:
        problems = [str(e)]
    except (SQLAlchemyError, TypeError, ValueError) as e:  # a row edited into what the schema cannot hold (text for bytes)
        problems = [f"the ledger's database cannot be read as a ledger: {type(e).__name__}: {str(e).splitlines()[0][:300]}"]
    finally:
        store.close()
    for problem in problems:
        out.write(f"  PROBLEM: {problem}\n")
    if more:
        out.write(f"  ... and {more} more problems\n")
    out.write("verify: OK\n" if not problems else f"verify: FAILED ({len(problems)} problems)\n")
    return not problems


def payouts_command(workdir: Path | None, rm_web: str | None, start: int | None, end: int | None, as_json: bool) -> int:
    from cortex_rm import local_cluster

    if (start is None) != (end is None):
        print("cortex-rm: give both --start and --end (ms since the epoch), or neither for the current period", file=sys.stderr)
        return 2
    try:
        web = str(local_cluster.rm_addresses(workdir).webapp) if workdir is not None else str(rm_web)
        print_payouts(fetch_payouts(web, start, end), as_json, sys.stdout)
    except (LedgerCliError, local_cluster.LocalClusterError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 1
    return 0


def verify_command(workdir: Path | None, config_path: Path | None, url: str | None) -> int:
    from cortex_rm import local_cluster

    try:
        if workdir is not None:
            config_path = local_cluster.rm_config(workdir)
        config = load_config(config_path)
    except (ConfigError, local_cluster.LocalClusterError) as e:
        print(f"cortex-rm: {e}", file=sys.stderr)
        return 2
    ring = config.ring.ring_config()
    ok = verify_ledger(url or config.ledger_url, ring.successor_list_length, ring.resource_managers, sys.stdout)
    return 0 if ok else 1
