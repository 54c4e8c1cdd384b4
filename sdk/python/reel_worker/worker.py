"""A Reel worker: connects to reeld's WorkerService, runs a handler per assigned job on a
pool of `slots` threads, renews the leases of the jobs it runs, and reports the outcome.

    worker = Worker("127.0.0.1:50051", "gpu-box-1", slots=2)

    @worker.handler("SCENE_CREATION")
    def handle(job, ctx):
        ctx.report("SCRIPT_READY", "SCRIPT_EXPANSION", 25, "script expanded", expanded_script=s)
        ...
        return Result(video_url, thumbnail_url, duration_seconds)   # -> CompleteJob

    worker.run()   # blocks until worker.stop() (or start() to run it on a thread)

A handler that raises ends the job with FailJob: RetryableError / FatalError choose
`retryable` and the code; any other exception is retryable with code WORKER_ERROR.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import random
import threading
import time
from typing import Callable

import grpc

from ._stubs import load

pb, wpb, wpb_grpc, _ = load()
log = logging.getLogger("reel_worker")

_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE,)


@dataclasses.dataclass
class Result:
    """What a handler returns: the finished video (sent with CompleteJob)."""
    video_url: str
    thumbnail_url: str = ""
    duration_seconds: float = 0.0


class JobError(Exception):
    """A handler failure with a code; `retryable` says whether Reel may try the job again."""
    retryable = True

    def __init__(self, message: str = "", code: str = "WORKER_ERROR"):
        super().__init__(message)
        self.message, self.code = message, code


class RetryableError(JobError):
    retryable = True


class FatalError(JobError):
    retryable = False


class LeaseLost(Exception):
    """The worker no longer holds the job (lease expired, cancelled, finished elsewhere):
    stop working on it. Raised by ctx.report() and ctx.check()."""


def enum_value(enum, prefix: str, value) -> int:
    """pb.JobStatus.JOB_STATUS_SCRIPT_READY, "SCRIPT_READY" and "script_ready" are all fine."""
    if isinstance(value, str):
        name = value.upper()
        return enum.Value(name if name.startswith(prefix) else prefix + name)
    return int(value)


class JobContext:
    """The handler's view of its assignment: report progress, check whether it still holds
    the job. `job` is the latest reel.v1.Job (updated by every report)."""

    def __init__(self, worker: "Worker", job, lease_seconds: int):
        self.worker, self.job, self.lease_seconds = worker, job, lease_seconds
        self._lost = threading.Event()

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def cancelled(self) -> bool:
        """True once the lease is lost (a heartbeat said so) or the worker stops without
        draining: the handler should return (or raise) soon; its outcome is not reported."""
        return self._lost.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; returns True at once if the job is cancelled meanwhile."""
        return self._lost.wait(seconds)

    def check(self):
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job.id}: lease lost")

    def report(self, status=None, stage=None, progress=None, message: str = "", **artifacts):
        """ReportProgress. status/stage/progress default to the job's current ones; keyword
        arguments are Artifacts fields to save (a checkpoint, e.g. provider_job_id=...).
        Raises LeaseLost when the worker no longer holds the job, FatalError (code
        INVALID_REPORT) when Reel refuses the report itself (e.g. a skipped status)."""
        self.check()
        req = wpb.ReportProgressRequest(
            worker_id=self.worker.worker_id, job_id=self.job.id,
            status=self.job.status if status is None else enum_value(pb.JobStatus, "JOB_STATUS_", status),
            stage=self.job.stage if stage is None else enum_value(pb.Stage, "STAGE_", stage),
            progress=self.job.progress if progress is None else int(progress),
            message=message, artifacts=pb.Artifacts(**artifacts) if artifacts else None)
        try:
            self.job = self.worker._call(self.worker._stub.ReportProgress, req)
            return self.job
        except grpc.RpcError as e:
            raise self._refusal(e, "report") from None

    def _refusal(self, e: grpc.RpcError, what: str) -> Exception:
        """Why Reel refused a call: the lease is gone (LeaseLost), or the call broke the rules
        (FatalError INVALID_REPORT). Other errors are returned as they are."""
        if e.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
            return e
        if e.code() == grpc.StatusCode.NOT_FOUND or not self.worker._still_held(self.job.id):
            self._lost.set()
            return LeaseLost(f"job {self.job.id}: {e.details()}")
        return FatalError(f"{what} refused: {e.details()}", code="INVALID_REPORT")


Handler = Callable[[object, JobContext], Result]


class Worker:
    def __init__(self, address: str, worker_id: str, job_types=(), providers=(), slots: int = 1,
                 lease_heartbeat: float | None = None, handlers: dict | None = None,
                 rpc_timeout: float = 10.0, reconnect_backoff=(0.2, 10.0), channel_options=(),
                 api_key: str | None = None):
        """`job_types` empty: those with a handler (every type if a catch-all is registered).
        `lease_heartbeat`: seconds between heartbeats (default: a third of the lease).
        `api_key`: an admin key when reeld runs with --auth (default: $REEL_API_KEY)."""
        import os
        key = api_key if api_key is not None else os.environ.get("REEL_API_KEY", "")
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.address, self.worker_id, self.slots = address, worker_id, slots
        self.job_types = [enum_value(pb.JobType, "JOB_TYPE_", t) for t in job_types]
        self.providers = list(providers)
        self.lease_heartbeat, self.rpc_timeout = lease_heartbeat, rpc_timeout
        self.reconnect_backoff = reconnect_backoff
        self.lease_seconds = 0  # from the latest assignment
        self._handlers: dict[int, Handler] = {}
        for job_type, fn in (handlers or {}).items():
            self.handler(job_type)(fn)
        self._channel = grpc.insecure_channel(address, options=list(channel_options))
        self._stub = wpb_grpc.WorkerServiceStub(self._channel)
        self._lock = threading.Lock()
        self._active: dict[str, JobContext] = {}
        self._stream = None
        self._stopping = threading.Event()
        self._drain = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public API

    def handler(self, job_type=None):
        """Decorator: registers fn(job, ctx) for a JobType (None: every type without one)."""
        key = 0 if job_type is None else enum_value(pb.JobType, "JOB_TYPE_", job_type)

        def register(fn: Handler) -> Handler:
            self._handlers[key] = fn
            return fn
        return register

    def active_jobs(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def start(self) -> "Worker":
        """Runs the worker on a background thread."""
        self._thread = threading.Thread(target=self.run, name=f"reel-worker-{self.worker_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: bool = True, wait: bool = True, timeout: float | None = None):
        """Stops taking jobs. drain=True lets running handlers finish and report; False marks
        them cancelled (their jobs return to the queue when the leases expire)."""
        self._drain = drain
        self._stopping.set()
        with self._lock:
            stream, contexts = self._stream, list(self._active.values())
        if stream is not None:
            stream.cancel()
        if not drain:
            for ctx in contexts:
                ctx._lost.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self):
        """Connects and serves assignments until stop(); reconnects with backoff when the
        stream drops. Raises grpc.RpcError on INVALID_ARGUMENT (a bad id or slot count)."""
        pool = concurrent.futures.ThreadPoolExecutor(max(1, self.slots), f"reel-job-{self.worker_id}")
        beats_done = threading.Event()
        beats = threading.Thread(target=self._heartbeats, args=(beats_done,), daemon=True)
        beats.start()
        delay = self.reconnect_backoff[0]
        try:
            while not self._stopping.is_set():
                opened = time.monotonic()
                try:
                    got = self._serve_stream(pool)
                    why = "stream ended"
                except grpc.RpcError as e:
                    if self._stopping.is_set():
                        break
                    if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    got, why = False, f"{e.code().name}: {e.details()}"
                if got or time.monotonic() - opened > 5:
                    delay = self.reconnect_backoff[0]
                pause = delay * random.uniform(0.8, 1.2)
                log.warning("worker %s: %s; reconnecting in %.1fs", self.worker_id, why, pause)
                self._stopping.wait(pause)
                delay = min(delay * 2, self.reconnect_backoff[1])
        finally:
            pool.shutdown(wait=self._drain, cancel_futures=not self._drain)
            beats_done.set()
            beats.join()
            self._channel.close()
            log.info("worker %s stopped", self.worker_id)

    # ------------------------------------------------------------------ internals

    def _serve_stream(self, pool) -> bool:
        types = self.job_types or ([] if 0 in self._handlers else sorted(self._handlers))
        req = wpb.ConnectRequest(worker_id=self.worker_id, job_types=types,
                                 providers=self.providers, slots=self.slots)
        stream = self._stub.Connect(req, metadata=self._metadata)
        with self._lock:
            self._stream = stream
        if self._stopping.is_set():
            stream.cancel()
        log.info("worker %s connecting to %s (slots %d)", self.worker_id, self.address, self.slots)
        got = False
        for assignment in stream:
            got = True
            job = assignment.job
            self.lease_seconds = assignment.lease_seconds or self.lease_seconds
            with self._lock:
                old = self._active.get(job.id)
                ctx = self._active[job.id] = JobContext(self, job, assignment.lease_seconds)
            if old is not None:  # its lease ran out meanwhile: that run is stale, start over
                log.warning("job %s assigned again while running; restarting it", job.id)
                old._lost.set()
            log.info("worker %s: assigned job %s (%s)", self.worker_id, job.id,
                     pb.JobType.Name(job.type))
            pool.submit(self._run_job, ctx)
        return got

    def _run_job(self, ctx: JobContext):
        job = ctx.job
        fn = self._handlers.get(job.type) or self._handlers.get(0)
        try:
            if fn is None:
                raise FatalError(f"no handler for {pb.JobType.Name(job.type)}", code="NO_HANDLER")
            out = fn(job, ctx)
            ctx.check()
            if isinstance(out, dict):
                out = Result(**out)
            if not isinstance(out, Result):
                raise FatalError(f"handler returned {type(out).__name__}, not a Result")
            try:
                done = self._call(self._stub.CompleteJob, wpb.CompleteJobRequest(
                    worker_id=self.worker_id, job_id=job.id, video_url=out.video_url,
                    thumbnail_url=out.thumbnail_url, duration_seconds=out.duration_seconds))
            except grpc.RpcError as e:  # e.g. PREVIEW_READY was never reported
                raise ctx._refusal(e, "CompleteJob") from None
            log.info("job %s completed (%s)", job.id, pb.JobStatus.Name(done.status))
        except LeaseLost as e:
            log.warning("worker %s gave up %s", self.worker_id, e)
        except Exception as e:
            if ctx.cancelled:
                log.warning("job %s: handler ended after the lease was lost: %r", job.id, e)
                return
            err = e if isinstance(e, JobError) else JobError(f"{type(e).__name__}: {e}")
            log.warning("job %s failed (%s, retryable=%s): %s", job.id, err.code,
                        err.retryable, err.message, exc_info=not isinstance(e, JobError))
            try:
                self._call(self._stub.FailJob, wpb.FailJobRequest(
                    worker_id=self.worker_id, job_id=job.id, code=err.code,
                    message=err.message, retryable=err.retryable))
            except grpc.RpcError as rpc:
                log.warning("FailJob %s refused: %s %s", job.id, rpc.code().name, rpc.details())
        finally:
            with self._lock:
                if self._active.get(job.id) is ctx:
                    del self._active[job.id]

    def _call(self, method, request, attempts: int = 5):
        """A unary call, retried with backoff while the server is unreachable."""
        for attempt in range(attempts):
            try:
                return method(request, timeout=self.rpc_timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if e.code() not in _RETRY_CODES or attempt == attempts - 1:
                    raise
                time.sleep(0.2 * 2 ** attempt)

    def _heartbeat(self, job_ids):
        resp = self._call(self._stub.Heartbeat,
                          wpb.HeartbeatRequest(worker_id=self.worker_id, job_ids=job_ids))
        for job_id in resp.lost_job_ids:
            with self._lock:
                ctx = self._active.get(job_id)
            if ctx is not None and not ctx.cancelled:
                log.warning("worker %s lost the lease of job %s", self.worker_id, job_id)
                ctx._lost.set()
        return resp

    def _still_held(self, job_id: str) -> bool:
        try:
            return job_id in self._heartbeat([job_id]).renewed_job_ids
        except grpc.RpcError:
            return False

    def _heartbeats(self, done: threading.Event):
        while not done.wait(self.lease_heartbeat or max(0.2, (self.lease_seconds or 3) / 3)):
            ids = self.active_jobs()
            if ids:
                try:
                    self._heartbeat(ids)
                except grpc.RpcError as e:
                    log.warning("heartbeat failed: %s %s", e.code().name, e.details())
