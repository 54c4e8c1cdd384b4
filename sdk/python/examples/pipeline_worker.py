#!/usr/bin/env python3
"""An external Reel worker running the five pipeline stages (DESIGN §5) against a Kling-style
REST provider (Tests/fake_provider/fake_provider.py in tests and demos).

    python3 sdk/python/examples/pipeline_worker.py --address 127.0.0.1:50051 \
        --provider-url http://127.0.0.1:PORT --worker-id w1 --slots 2

Each stage reports its status and saves its artifact, so a job retried after a failure or a
lost lease resumes where it stopped: a saved script or validation is reused, and a saved
provider_job_id is polled again instead of submitting (and paying for) a second generation.
SIGTERM/SIGINT: stop taking jobs, finish the running ones, exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sdk/python, for reel_worker

from reel_worker import FatalError, Result, RetryableError, Worker  # noqa: E402

S, ST = "JOB_STATUS_", "STAGE_"


class Provider:
    """The Kling-style REST API: submit a text-to-video task, poll it."""

    def __init__(self, base_url: str, api_key: str | None = None, attempts: int = 4):
        self.base_url, self.api_key, self.attempts = base_url.rstrip("/"), api_key, attempts

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(1, self.attempts + 1):
            req = urllib.request.Request(self.base_url + path, data, headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    reply = json.loads(resp.read())
                    if not isinstance(reply, dict) or not isinstance(reply.get("data"), dict):
                        raise ValueError("no data object")
                    return reply["data"]
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500:  # 4xx: asking again won't help
                    raise FatalError(f"provider said {e.code}: {e.read()[:200]!r}", "PROVIDER_REJECTED")
                why, wait = f"HTTP {e.code}", float(e.headers.get("Retry-After") or 0.2 * 2 ** attempt)
            except (urllib.error.URLError, OSError, ValueError) as e:  # down, or garbage
                why, wait = f"{type(e).__name__}: {e}", 0.2 * 2 ** attempt
            if attempt == self.attempts:
                raise RetryableError(f"provider {method} {path}: {why}", "PROVIDER_UNAVAILABLE")
            time.sleep(min(wait, 10))

    def submit(self, prompt: str, job) -> str:
        cfg = job.config
        task = self._call("POST", "/v1/videos/text-to-video", {
            "prompt": prompt, "duration": cfg.target_duration_seconds or 5,
            "quality": "standard" if cfg.quality == 0 else {1: "preview", 3: "high"}.get(cfg.quality, "standard"),
            "model": cfg.model, "external_task_id": job.id})  # the provider dedupes retries
        if not task.get("task_id"):
            raise RetryableError("submit: no task_id", "PROVIDER_BAD_RESPONSE")
        return task["task_id"]

    def poll(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/videos/{task_id}")


def make_handler(provider: Provider, poll_interval: float):
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

        # 3. Video generation (35 -> 85 %): the provider's id is saved before polling.
        task_id = a.provider_job_id
        if not task_id:
            ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 36, "submitting to the provider")
            task_id = provider.submit(script, job)
            ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 40, f"submitted as {task_id}",
                       provider_job_id=task_id)
        else:
            ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION", 40, f"resuming provider job {task_id}")
        last = None
        while True:
            if ctx.wait(poll_interval):
                return None  # lease lost: nothing is reported
            task = provider.poll(task_id)
            status, progress = task.get("task_status"), int(task.get("progress") or 0)
            if status in ("succeed", "succeeded"):
                videos = (task.get("task_result") or {}).get("videos") or [{}]
                video_url, duration = videos[0].get("url"), float(videos[0].get("duration") or 0)
                if not video_url:
                    raise RetryableError("task succeeded without a video url", "PROVIDER_BAD_RESPONSE")
                break
            if status in ("failed", "cancelled"):
                raise RetryableError(task.get("task_status_msg") or status, "PROVIDER_FAILED")
            if progress != last:
                last = progress
                ctx.report(S + "CONTINUITY_CHECKED", ST + "VIDEO_GENERATION",
                           min(max(40 + progress * 45 // 100, 40), 84), f"generating video ({progress}%)")
        ctx.report(S + "PREVIEW_READY", ST + "VIDEO_GENERATION", 85, "preview ready",
                   preview_video_url=video_url)

        # 4. Upload / post-processing (85 -> 95 %): a real worker stores the video in its own
        # bucket and makes a thumbnail and HLS renditions; this one names them.
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
    ap.add_argument("--provider-url", required=True, help="the Kling-style provider's base URL")
    ap.add_argument("--provider-key", default=None, help="Bearer token for the provider")
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--poll-interval", type=float, default=0.2, help="seconds between provider polls")
    ap.add_argument("--job-types", default="", help="comma-separated, e.g. SCENE_CREATION (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    worker = Worker(args.address, args.worker_id, slots=args.slots, providers=["kling"],
                    job_types=[t for t in args.job_types.split(",") if t])
    worker.handler()(make_handler(Provider(args.provider_url, args.provider_key), args.poll_interval))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop(wait=False))
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
