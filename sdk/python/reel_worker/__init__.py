"""reel_worker: run your own generation code as a Reel worker (issue 9).

    from reel_worker import Worker, Result, RetryableError, FatalError, pb

Stubs for reel.v1 are generated from the repository's proto/ on first import (see
_stubs.py); `pb` is reel.v1.jobs_pb2 (Job, JobStatus, Stage, ...), `wpb` reel.v1.worker_pb2
and `wpb_grpc` its WorkerServiceStub module, for calling the service directly.
"""

from ._stubs import generate, load
from .worker import (FatalError, JobContext, JobError, LeaseLost, Result, RetryableError,
                     Worker, enum_value, pb, wpb, wpb_grpc)

__all__ = ["Worker", "JobContext", "Result", "JobError", "RetryableError", "FatalError",
           "LeaseLost", "enum_value", "generate", "load", "pb", "wpb", "wpb_grpc"]
