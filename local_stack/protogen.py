"""Generates the protobuf/gRPC Python modules under mmrag/pb from proto/, and checks they are current."""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PB_PACKAGE = Path("mmrag") / "pb"


def generate(out_root: Path) -> list[Path]:
    """Runs protoc (grpcio-tools) over proto/mmrag/pb/*.proto into out_root; raises RuntimeError on a protoc error."""
    from grpc_tools import protoc  # dev dependency: only needed to (re)generate

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PB_PACKAGE).glob("*.proto"))
    (out_root / PB_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}: fix the .proto files under {PROTO_DIR}")
    init = out_root / PB_PACKAGE / "__init__.py"
    init.write_text('"""Generated protobuf/gRPC modules: run `mmrag proto generate` after editing proto/."""\n')
    return sorted((out_root / PB_PACKAGE).iterdir())


def stale_files() -> list[str]:
    """Names of generated files that differ from a fresh generation (empty when current)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for path in fresh:
            if path.name == "__pycache__":
                continue
            committed = ROOT / PB_PACKAGE / path.name
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                stale.append(str(PB_PACKAGE / path.name))
        return stale


def main(check: bool = False) -> int:
    if check:
        stale = stale_files()
        if stale:
            print(f"generated code is stale: {stale}; run `mmrag proto generate` and commit", file=sys.stderr)
            return 1
        print("generated code is current")
        return 0
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
