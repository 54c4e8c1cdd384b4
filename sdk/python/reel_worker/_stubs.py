"""Python stubs for reel.v1, generated from the repository's proto/ with grpc_tools.protoc.

`generate()` compiles reel/v1/jobs.proto and reel/v1/worker.proto into a cache directory
keyed by the protos' contents and the grpcio-tools/protobuf versions, so a worker compiles
them once and later imports are instant. `load()` puts that directory on sys.path and
imports the modules. The generated modules are the usual top-level `reel.v1.*_pb2` (a
namespace package): a process that already imported `reel.v1.jobs_pb2` from elsewhere (the
interop suite does) keeps that one, so each message type is registered once.

Environment: REEL_PROTO_DIR (default: <repo>/proto), REEL_WORKER_STUBS_DIR (default:
$XDG_CACHE_HOME/reel_worker or ~/.cache/reel_worker; a temporary directory if unwritable).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_FILES = ("reel/v1/jobs.proto", "reel/v1/worker.proto")


def default_proto_dir() -> Path:
    env = os.environ.get("REEL_PROTO_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "proto"


def _cache_root() -> Path:
    env = os.environ.get("REEL_WORKER_STUBS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reel_worker"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def generate(proto_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Compiles the protos (unless an up-to-date copy is cached); returns the directory to
    put on sys.path."""
    from grpc_tools import protoc

    proto_dir = Path(proto_dir or default_proto_dir())
    key = hashlib.sha256(f"{_version('grpcio-tools')}/{_version('protobuf')}".encode())
    for name in PROTO_FILES:
        path = proto_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: set REEL_PROTO_DIR to Reel's proto/")
        key.update(name.encode() + b"\0" + path.read_bytes())
    root = Path(cache_dir or _cache_root())
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / f"reel_worker-{os.getuid()}"
        root.mkdir(parents=True, exist_ok=True)
    out = root / key.hexdigest()[:16]
    if (out / "reel" / "v1" / "worker_pb2_grpc.py").exists():
        return out

    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={tmp}", f"--grpc_python_out={tmp}", *PROTO_FILES]
    if protoc.main(args) != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"grpc_tools.protoc failed: {' '.join(args)}")
    try:
        os.rename(tmp, out)  # atomic: concurrent workers never see half a directory
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
    return out


def load():
    """Generates (if needed) and imports the stubs: (jobs_pb2, worker_pb2, worker_pb2_grpc,
    jobs_pb2_grpc)."""
    out = str(generate())
    if out not in sys.path:
        sys.path.insert(0, out)
    from reel.v1 import jobs_pb2, jobs_pb2_grpc, worker_pb2, worker_pb2_grpc
    return jobs_pb2, worker_pb2, worker_pb2_grpc, jobs_pb2_grpc
