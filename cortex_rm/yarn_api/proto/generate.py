"""Regenerate the ``*_pb2.py`` modules (and their ``.pyi`` type stubs) beside this file from our ``.proto`` files.

Run ``python -m cortex_rm.yarn_api.proto.generate`` after editing a ``.proto``;
``--check`` exits non-zero when a committed module is stale (the test suite runs
it).  The compiler is ``grpc_tools.protoc`` from the ``grpcio-tools`` package, an
extra of the test dependencies, so nobody needs a system ``protoc``.

Protos are compiled with the repository root as the include path, so that a
generated module imports its dependencies as ``cortex_rm.yarn_api.proto.X_pb2``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parents[2]


def proto_files() -> list[Path]:
    """Every ``.proto`` we own, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def compile_into(out_dir: Path) -> None:
    """Compile every proto into ``out_dir`` (mirroring the package layout)."""
    from grpc_tools import protoc  # imported late: only needed by developers and tests

    args = [
        "protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",  # the stubs mypy checks our use of the messages against
        *(str(p.relative_to(REPO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


def stale_modules() -> list[str]:
    """Names of generated modules whose committed text differs from a fresh compile."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        compile_into(Path(tmp))
        fresh_dir = Path(tmp) / PROTO_DIR.relative_to(REPO_ROOT)
        for fresh in sorted([*fresh_dir.glob("*_pb2.py"), *fresh_dir.glob("*_pb2.pyi")]):
            committed = PROTO_DIR / fresh.name
            if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
                stale.append(fresh.name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_modules()
        for name in stale:
            print(f"stale: {name} (run: python -m cortex_rm.yarn_api.proto.generate)")
        return 1 if stale else 0
    compile_into(REPO_ROOT)
    print(f"regenerated {len(proto_files())} modules in {PROTO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
