#!/usr/bin/env python3
"""An external Reel worker running the five pipeline stages (DESIGN §5) against Kling's
published video API (in tests and demos: the strict fake in Tests/fake_kling/fake_kling.py).

    KLING_ACCESS_KEY=... KLING_SECRET_KEY=... python3 sdk/python/examples/pipeline_worker.py \
        --address 127.0.0.1:50051 --provider-url http://127.0.0.1:PORT --worker-id w1 --slots 2

Kling, as published: every call carries `Authorization: Bearer <JWT>` (HS256, `iss` the access
key, valid 30 minutes, signed with the secret key; made here with the standard library);
`POST /v1/videos/text2video` makes a task, `GET /v1/videos/text2video/{task_id}` reads it;
every answer is `{code, message, request_id, data}` and is judged by its `code`, never by the
HTTP status alone. Each task carries `external_task_id` `reel-<job id>-<attempt>` (unique per
account), so an answer lost on the way back is recovered by looking the task up, not by
paying for a second one.

Each stage reports its status and saves its artifact, so a job retried after a failure or a
lost lease resumes where it stopped: a saved script or validation is reused, and a saved
provider_job_id (Kling's task id, saved *before* the task is followed) is followed again
instead of submitting (and paying for) a second generation. A retry after Kling *failed*
the task submits a new one under the next attempt's external id.
SIGTERM/SIGINT: stop taking jobs, finish the running ones, exit 0.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sdk/python, for reel_worker

from reel_worker import FatalError, LeaseLost, Result, RetryableError, Worker, pb  # noqa: E402

S, ST = "JOB_STATUS_", "STAGE_"
log = logging.getLogger("pipeline_worker")

DEFAULT_URL = "https://api-singapore.klingai.com"
DEFAULT_MODEL = "kling-v2-5-turbo"
MAX_PROMPT = 2500  # Kling's limit, in characters
KIND = "text2video"

AUTH_CODES = range(1000, 1005)            # renew the token once, then PROVIDER_AUTH
PARKED_CODES = {1100, 1101, 1102, 1304}   # account exception, arrears, no credit, IP: wait
THROTTLE_CODES = {1302, 1303}             # rate limit, concurrency: wait and resubmit
SERVER_CODES = range(5000, 5003)          # retry with backoff


# --------------------------------------------------------------------------- Kling client


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_jwt(access_key: str, secret_key: str, now: float | None = None, ttl: int = 1800) -> str:
    """Kling's API token: HS256 JWT {"iss": access key, "exp": now+ttl, "nbf": now-5}."""
    now = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps({"iss": access_key, "exp": now + ttl, "nbf": now - 5},
                                 separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = hmac.new(secret_key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(sig)}"


class KlingAnswer(Exception):
    """Kling answered with a code other than 0."""

    def __init__(self, code: int, message: str, http_status: int, request_id: str):
        super().__init__(f"Kling code {code} (HTTP {http_status}): {message or 'no message'}"
                         + (f" [request_id {request_id}]" if request_id else ""))
        self.code, self.message, self.http_status, self.request_id = code, message, http_status, request_id


class NoAnswer(Exception):
    """No usable answer: a broken connection, a timeout, or a body that is not Kling's JSON.
    `maybe_done` is true when the request may have been acted on (sent, then the answer lost)."""

    def __init__(self, message: str, maybe_done: bool):
        super().__init__(message)
        self.maybe_done = maybe_done


class Kling:
    """One Kling account: a reusable token and the raw calls. Policy (what to do about each
    code) is in `KlingJob`, which knows the job it works for."""

    def __init__(self, base_url: str, access_key: str, secret_key: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.access_key, self.secret_key, self.timeout = access_key, secret_key, timeout
        self._lock = threading.Lock()
        self._token, self._token_until = "", 0.0

    def token(self, renew: bool = False) -> str:
        """The current token, made anew when asked or within 5 minutes of its expiry."""
        with self._lock:
            now = time.time()
            if renew or not self._token or now >= self._token_until:
                self._token = make_jwt(self.access_key, self.secret_key, now)
                self._token_until = now + 1800 - 300
            return self._token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[dict, str]:
        """One call: (data, request_id) for code 0; raises KlingAnswer or NoAnswer. A refused
        token (1000–1004) is renewed once before the refusal is raised."""
        renewed = False
        while True:
            status, env = self._exchange(method, path, body, self.token(renew=renewed))
            code = env["code"]
            if code == 0:
                return env.get("data"), env.get("request_id") or ""
            if code in AUTH_CODES and not renewed:
                renewed = True
                log.warning("Kling refused the token (code %s); renewing it once", code)
                continue
            raise KlingAnswer(code, str(env.get("message") or ""), status, env.get("request_id") or "")

    def _exchange(self, method: str, path: str, body: dict | None, token: str) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:  # Kling's errors come with a status and an envelope
            try:
                status, raw = e.code, e.read()
            except OSError as read_err:
                raise NoAnswer(f"{method} {path}: HTTP {e.code}, body lost: {read_err}", True) from None
        except urllib.error.URLError as e:
            refused = isinstance(e.reason, ConnectionRefusedError)
            raise NoAnswer(f"{method} {path}: {e.reason}", not refused) from None
        except OSError as e:  # reset, timeout, truncated answer
            raise NoAnswer(f"{method} {path}: {type(e).__name__}: {e}", True) from None
        try:
            env = json.loads(raw)
            if not isinstance(env, dict) or not isinstance(env.get("code"), int):
                raise ValueError("no integer code")
        except ValueError:
            raise NoAnswer(f"{method} {path}: HTTP {status}, not a Kling answer: {raw[:120]!r}",
                           method == "POST") from None
        return status, env


# --------------------------------------------------------------------------- one job's calls


class KlingJob:
    """Kling's calls for one job, with DESIGN §5's rules for each answer: throttled and parked
    answers wait (no attempt burned), server errors and lost answers are retried with backoff,
    refusals end the job at once with the provider's message."""

    def __init__(self, kling: Kling, job, ctx, *, server_error_attempts: int = 4,
                 backoff: float = 0.2, park_wait: float = 30.0):
        self.kling, self.job, self.ctx = kling, job, ctx
        self.server_error_attempts, self.backoff, self.park_wait = server_error_attempts, backoff, park_wait
        cfg = job.config
        self.model = cfg.model or DEFAULT_MODEL
        self.mode = "pro" if cfg.quality == pb.QUALITY_HIGH else "std"
        self.duration = "5" if cfg.target_duration_seconds <= 5 else "10"

    def external_id(self, attempt: int) -> str:
        return f"reel-{self.job.id}-{attempt}"

    def _sleep(self, seconds: float):
        if self.ctx.wait(seconds):
            raise LeaseLost(f"job {self.job.id}: lease lost while waiting for Kling")

    def request(self, method: str, path: str, body: dict | None = None, *, what: str,
                in_doubt=None) -> tuple[dict, str]:
        """A call with the waiting rules; a refusal is raised as the KlingAnswer it is (see
        `refusal`). `in_doubt` (for a submit): called when the answer was lost after the
        request may have gone through; returns the task found by the external id (then that
        is the answer) or None (then the submit is sent again)."""
        server_errors, throttles = 0, 0
        while True:
            try:
                return self.kling.call(method, path, body)
            except NoAnswer as e:
                if e.maybe_done and in_doubt is not None:
                    found = in_doubt()
                    if found is not None:
                        return found, ""
                why = str(e)
            except KlingAnswer as e:
                code, unknown = e.code, e.code not in range(1000, 6000)
                if code in PARKED_CODES:
                    log.error("ALERT Kling account unavailable (%s): job %s waits, nothing fails; "
                              "trying again in %.0f s", e, self.job.id, self.park_wait)
                    self._sleep(self.park_wait)
                    continue
                if code in THROTTLE_CODES or (unknown and e.http_status == 429):
                    throttles += 1
                    wait = min(self.backoff * 2 ** min(throttles - 1, 8), 30.0)
                    log.info("%s throttled by Kling (%s); again in %.2f s", what, e, wait)
                    self._sleep(wait)
                    continue
                if not (code in SERVER_CODES or (unknown and e.http_status >= 500)):
                    raise
                why = str(e)
            server_errors += 1
            if server_errors >= self.server_error_attempts:
                raise RetryableError(f"{what}: {why}", "PROVIDER_UNAVAILABLE")
            log.info("%s: %s; retrying (%d)", what, why, server_errors)
            self._sleep(self.backoff * 2 ** (server_errors - 1))

    def refusal(self, e: KlingAnswer, what: str) -> FatalError:
        """The job's failure for a refusal that waiting won't cure (not retried)."""
        c, said = e.code, e.message or "no message"
        if c in AUTH_CODES or (c not in range(1000, 6000) and e.http_status == 401):
            return FatalError(f"Kling refused the credentials: {said} (check KLING_ACCESS_KEY and "
                              "KLING_SECRET_KEY)", "PROVIDER_AUTH")
        if c == 1103:
            return FatalError(f"no access to model {self.model} or this API at Kling: {said}",
                              "PROVIDER_PERMISSION")
        if c in (1300, 1301):
            return FatalError(said, "CONTENT_POLICY")
        return FatalError(f"{what}: Kling refused the request: {said} (code {c})", "PROVIDER_BAD_REQUEST")

    def query(self, ident: str) -> dict | None:
        """The task with this task id or external id, or None if Kling knows no such task."""
        what = f"query {ident}"
        try:
            data, _ = self.request("GET", f"/v1/videos/{KIND}/{urllib.parse.quote(ident, safe='')}",
                                   what=what)
        except KlingAnswer as e:
            if e.code in (1202, 1203):
                return None
            raise self.refusal(e, what) from None
        if not isinstance(data, dict) or not data.get("task_id"):
            raise RetryableError(f"{what}: Kling's answer has no task", "PROVIDER_UNAVAILABLE")
        return data

    def submit(self, prompt: str, attempt: int) -> tuple[dict, str]:
        """Makes this attempt's task: (task, request_id). An external id already taken means
        an earlier try of this very attempt made the task: it is adopted, unless Kling failed
        it, in which case the next attempt number is used."""
        while True:
            ext = self.external_id(attempt)
            what = f"submit {ext}"
            body = {"model_name": self.model, "prompt": prompt[:MAX_PROMPT], "duration": self.duration,
                    "mode": self.mode, "aspect_ratio": "16:9", "external_task_id": ext}
            try:
                data, request_id = self.request("POST", f"/v1/videos/{KIND}", body, what=what,
                                                in_doubt=lambda ext=ext: self.query(ext))
            except KlingAnswer as e:
                found = self.query(ext) if e.code == 1201 else None
                if found is None:
                    raise self.refusal(e, what) from None
                if found.get("task_status") == "failed":
                    attempt += 1
                    continue
                return found, ""
            if not isinstance(data, dict) or not data.get("task_id"):
                found = self.query(ext)
                if found is None:
                    raise RetryableError(f"{what}: Kling's answer has no task_id", "PROVIDER_UNAVAILABLE")
                return found, request_id
            return data, request_id


# --------------------------------------------------------------------------- the pipeline


def expected_seconds(mode: str, duration: str, override: float | None) -> float:
    """How long Kling is expected to take (DESIGN §5: 90 s std, 180 s pro at 5 s; doubled at 10)."""
    if override:
        return override
    base = 180.0 if mode == "pro" else 90.0
    return base * (2 if duration == "10" else 1)


def make_handler(kling: Kling, poll_interval: float, expected: float | None, **job_opts):
    def handle(job, ctx):
        a = job.artifacts
        # 1. Script expansion (-> 25 %).
        script = a.expanded_script
        if not script:
            ctx.report(S + "PROCESSING", ST + "SCRIPT_EXPANSION", max(job.progress, 5), "expanding script")
            script = f"SCENE {job.scene_id} (bible v{job.bible_version}). {job.input_text.strip()}"
            ctx.report(S + "SCRIPT_READY", ST + "SCRIPT_EXPANSION", 25, "script expanded",
                       expanded_script=script)
        else:
            ctx.report(S + "SCRIPT_READY", ST + "SCRIPT_EXPANSION", 25, "script reused from an earlier attempt")

        # 2. Continuity validation (-> 35 %).
        if not a.validation_result:
            ctx.report(S + "SCRIPT_READY", ST + "CONTINUITY_VALIDATION", 30, "validating continuity")
            if "[[continuity-violation]]" in job.input_text:  # a demo of a non-retryable failure
                raise FatalError("the script contradicts the scene bible", "CONTINUITY_VIOLATION")
            verdict = json.dumps({"valid": True, "bible_version": job.bible_version, "corrections": []})
            ctx.report(S + "CONTINUITY_CHECKED", ST + "CONTINUITY_VALIDATION", 35, "continuity checked",
                       validation_result=verdict)
        else:
            ctx.report(S + "CONTINUITY_CHECKED", ST + "CONTINUITY_VALIDATION", 35, "continuity result reused")

        # 3. Video generation (35 -> 85 %): Kling's task id is saved before the task is followed.
        k = KlingJob(kling, job, ctx, **job_opts)
        task_id, task = a.provider_job_id, None
        if task_id:
            task = k.query(task_id)
            if task is None or task.get("task_status") == "failed":
                why = "unknown to Kling" if task is None else f"failed ({task.get('task_status_msg') or 'no reason'})"
                log.info("job %s: saved task %s is %s: submitting a new one", job.id, task_id, why)
                task_id, task = "", None
            else:
                ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 40, f"resuming kling task {task_id}")
        if not task_id:
            attempt = job.retry_count + 1
            # A worker killed between its submit and the checkpoint left a task no one saved:
            # earlier attempts' external ids are looked up before paying for another.
            for n in range(attempt - 1, 0, -1):
                found = k.query(k.external_id(n))
                if found is not None and found.get("task_status") != "failed":
                    task, request_id, how = found, "", f"found kling task {found['task_id']} by its external id {k.external_id(n)}"
                    break
            else:
                ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 36, "submitting to kling")
                task, request_id = k.submit(script, attempt)
                how = f"submitted to kling: task {task['task_id']}" + (f" (request_id {request_id})" if request_id else "")
            task_id = task["task_id"]
            ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 40, how,
                       provider_job_id=task_id, provider_request_id=request_id)

        # Kling sends no progress figure: it comes from the time spent against the time expected,
        # never past 84 % before the video is in.
        took = expected_seconds(k.mode, k.duration, expected)
        created = task.get("created_at") if task else None
        started = created / 1000.0 if isinstance(created, (int, float)) and created > 0 else time.time()
        last, first = 40, True
        while True:
            if not first and ctx.wait(poll_interval):
                return None  # lease lost: nothing is reported
            if not first or task is None:
                task = k.query(task_id)
                if task is None:
                    raise RetryableError(f"kling task {task_id} is gone", "PROVIDER_FAILED")
            first = False
            status = task.get("task_status")
            if status == "succeed":
                videos = (task.get("task_result") or {}).get("videos") or []
                video = videos[0] if videos and isinstance(videos[0], dict) else {}
                video_url = video.get("url")
                if not video_url:
                    raise RetryableError(f"kling task {task_id} succeeded without a video url",
                                         "PROVIDER_UNAVAILABLE")
                try:
                    duration = float(video.get("duration") or 0)
                except (TypeError, ValueError):
                    duration = 0.0
                break
            if status == "failed":
                raise RetryableError(f"kling failed task {task_id}: {task.get('task_status_msg') or 'no reason given'}",
                                     "PROVIDER_FAILED")
            if status not in ("submitted", "processing"):
                raise RetryableError(f"kling task {task_id} has an unknown status {status!r}",
                                     "PROVIDER_UNAVAILABLE")
            elapsed = max(0.0, time.time() - started)
            progress = 40 + int(44 * min(1.0, elapsed / took))
            if status == "processing":
                progress = max(progress, 45)
            if progress > last:
                last = progress
                ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", min(progress, 84),
                           f"generating video at kling (task {task_id} {status})")
        ctx.report(S + "PREVIEW_READY", ST + "VIDEO_GENERATION", 85, "video ready at kling",
                   preview_video_url=video_url)

        # 4. Upload / post-processing (85 -> 95 %): Kling deletes results after 30 days, so a
        # real worker copies the video into its own bucket now and makes a thumbnail and HLS
        # renditions; this one names them.
        ctx.report(S + "PREVIEW_READY", ST + "UPLOAD", 88, "storing video, thumbnail and HLS renditions")
        base = video_url[:-4] if video_url.endswith(".mp4") else video_url
        thumb, hls = base + ".jpg", base + ".m3u8"
        ctx.report(S + "PREVIEW_READY", ST + "UPLOAD", 95, "uploaded", final_video_url=video_url,
                   thumbnail_url=thumb, hls_playlist_url=hls)

        # 5. Finalization (-> 100 %): CompleteJob writes the segment, once.
        return Result(video_url=video_url, thumbnail_url=thumb, duration_seconds=duration)
    return handle


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default="127.0.0.1:50051", help="reeld's gRPC address")
    ap.add_argument("--provider-url", default=DEFAULT_URL, help=f"Kling's API base URL (default {DEFAULT_URL})")
    ap.add_argument("--access-key", default=None, help="Kling access key (default: $KLING_ACCESS_KEY)")
    ap.add_argument("--secret-key", default=None, help="Kling secret key (default: $KLING_SECRET_KEY)")
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--poll-interval", type=float, default=5.0, help="seconds between queries of a task")
    ap.add_argument("--expected-seconds", type=float, default=None,
                    help="how long a generation is expected to take, for progress (default: 90 s std, "
                         "180 s pro, doubled for 10 s videos)")
    ap.add_argument("--retry-base", type=float, default=0.2,
                    help="seconds before the first retry after a server error or throttle (doubling)")
    ap.add_argument("--park-wait", type=float, default=30.0,
                    help="seconds between tries while the Kling account is unavailable (no credit…)")
    ap.add_argument("--job-types", default="", help="comma-separated, e.g. SCENE_CREATION (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    access_key = args.access_key or os.environ.get("KLING_ACCESS_KEY", "")
    secret_key = args.secret_key or os.environ.get("KLING_SECRET_KEY", "")
    if not access_key or not secret_key:
        print("pipeline_worker: Kling keys missing: set KLING_ACCESS_KEY and KLING_SECRET_KEY "
              "(or --access-key/--secret-key)", file=sys.stderr)
        return 2

    kling = Kling(args.provider_url, access_key, secret_key)
    worker = Worker(args.address, args.worker_id, slots=args.slots, providers=["kling"],
                    job_types=[t for t in args.job_types.split(",") if t])
    worker.handler()(make_handler(kling, args.poll_interval, args.expected_seconds,
                                  backoff=args.retry_base, park_wait=args.park_wait))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop(wait=False))
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
