"""reeld with `--artifacts-url s3://BUCKET/PREFIX` (DESIGN §6): a job's artifacts go to an
S3-compatible bucket, the API names them `s3://…`, and any reeld on the same database and
bucket serves them at `/v1/media`.

The bucket is moto in server mode (`moto_server.py`: `python3 -m moto.server` with its check of
an escaped "/" in a signed query fixed) with IAM auth on
(`INITIAL_NO_AUTH_ACTION_COUNT`): after the three calls that make a user, its access key and an
allow-all policy, every request must carry a valid SigV4 signature for that key. boto3 looks
at the bucket from outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest

import reel_interop as ri
import reel_web as web

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

BUCKET = "reel-media"
PREFIX = "shared/v1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Moto:
    def __init__(self):
        self.port = ri.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        # moto.server with its check of a query holding an escaped "/" fixed (see moto_server.py).
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_server.py")
        self.proc = subprocess.Popen([sys.executable, server, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                _NO_PROXY.open(self.url + "/moto-api/", timeout=2).read()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert self.proc.poll() is None, "moto server exited at start"
                assert time.monotonic() < deadline, "moto server did not start in 30 s"
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="reel")
        key = iam.create_access_key(UserName="reel")["AccessKey"]
        iam.put_user_policy(UserName="reel", PolicyName="all", PolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'))
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                               aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def moto():
    m = Moto()
    try:
        m.s3.create_bucket(Bucket=BUCKET)
        yield m
    finally:
        m.stop()


def s3_reeld(factory, name, fk, art, moto, db_url=None):
    srv = ri.kling_reeld(factory, name, fk.url, art, start=False,
                         extra_args=("--artifacts-url", f"s3://{BUCKET}/{PREFIX}/", "--s3-endpoint", moto.url),
                         env={"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
                              "REEL_S3_REGION": "us-east-1"})
    if db_url is not None:
        i = srv.args.index("--database-url")
        srv.args[i + 1] = db_url
        srv.db_url = db_url
    srv.start()
    return srv


def media(base, url, **kw):
    return web.call(base, "GET", "/v1/media?url=" + urllib.parse.quote(url, safe=""), **kw)


def test_artifacts_land_in_the_bucket_and_a_second_instance_serves_them(reeld_factory, fake_kling, moto, tmp_path):
    fake_kling.control(queued_ms=50, processing_ms=200)
    one = s3_reeld(reeld_factory, "s3-one", fake_kling, tmp_path / "art-one", moto)
    job = web.create_job(one.http_url, ri.unique("s3"))
    done = web.wait_status(one.http_url, job["id"], timeout=120)
    jid = done["id"]
    a = done["artifacts"]
    prefix = f"s3://{BUCKET}/{PREFIX}/{jid}/"
    want = {"finalVideoUrl": "final.mp4", "thumbnailUrl": "thumb.jpg", "hlsPlaylistUrl": "hls/index.m3u8",
            "previewVideoUrl": "preview.mp4"}
    for field, file in want.items():
        assert a.get(field) == prefix + file, (field, a)
    g = one.stub.GetJob(ri.pb.GetJobRequest(id=jid), timeout=ri.DEFAULT_TIMEOUT)
    assert g.artifacts.final_video_url == prefix + "final.mp4" and g.result.video_url == prefix + "final.mp4", g

    # No Prefix= : moto's signature check disagrees with boto3 about an encoded "/" in the query.
    listed = moto.s3.list_objects_v2(Bucket=BUCKET)
    keys = {o["Key"][len(f"{PREFIX}/{jid}/"):] for o in listed.get("Contents", [])
            if o["Key"].startswith(f"{PREFIX}/{jid}/")}
    assert {"final.mp4", "thumb.jpg", "preview.mp4", "last_frame.png", "hls/index.m3u8"} <= keys, keys
    assert any(k.startswith("hls/seg_") and k.endswith(".ts") for k in keys), keys
    final = moto.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{jid}/final.mp4")
    assert final["ContentType"] == "video/mp4"
    final_bytes = final["Body"].read()
    assert final_bytes[4:8] == b"ftyp" and final_bytes == (tmp_path / "art-one" / jid / "final.mp4").read_bytes()
    thumb = moto.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{jid}/thumb.jpg")
    assert thumb["ContentType"] == "image/jpeg"
    thumb_bytes = thumb["Body"].read()

    # Another instance: its own (empty) artifacts dir, the same database and bucket.
    two = s3_reeld(reeld_factory, "s3-two", fake_kling, tmp_path / "art-two", moto, db_url=one.db_url)
    assert not (tmp_path / "art-two" / jid).exists()
    for url, ctype, body in ((a["finalVideoUrl"], "video/mp4", final_bytes), (a["thumbnailUrl"], "image/jpeg", thumb_bytes)):
        r = media(two.http_url, url, timeout=30)
        assert r.status == 200, (url, r.status, r.body[:300])
        assert r.headers["content-type"] == ctype and r.body == body, url
    r = media(two.http_url, a["hlsPlaylistUrl"])
    assert r.status == 200 and r.headers["content-type"] == "application/vnd.apple.mpegurl" and r.body.startswith(b"#EXTM3U")

    for bad in (f"s3://{BUCKET}/{PREFIX}/{uuid.uuid4()}/final.mp4",   # no such job
                f"s3://other-bucket/{PREFIX}/{jid}/final.mp4",           # not this store's
                f"s3://{BUCKET}/elsewhere/{jid}/final.mp4",
                f"s3://{BUCKET}/{PREFIX}/{jid}/../{jid}/final.mp4",
                prefix + "missing.mp4"):                                  # the job's, but no object
        r = media(two.http_url, bad)
        assert r.status == 404 and r.json["code"] == "NOT_FOUND", (bad, r)


def test_s3_artifacts_without_keys_exit_at_once_with_one_clear_line(reeld_factory, bin_dir, tmp_path):
    from pathlib import Path
    db_url = reeld_factory.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REEL_", "AWS_"))}
    args = [str(Path(bin_dir) / "reeld"), "--listen", f"127.0.0.1:{ri.free_port()}", "--database-url", db_url,
            "--metrics-listen", f"127.0.0.1:{ri.free_port()}", "--http-listen", "",
            "--artifacts-url", f"s3://{BUCKET}/x", "--artifacts-dir", str(tmp_path / "art")]
    r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=15)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "AWS_ACCESS_KEY_ID" in lines[0], (r.returncode, lines)


def test_retention_removes_an_old_cancelled_jobs_objects_while_a_segments_final_video_stays(
        reeld_factory, fake_kling, moto, tmp_path):
    """A retention pass (reeld runs one at start) on jobs aged past `--retention-days` by SQL:
    the cancelled job, which no segment refers to, goes with every object under its prefix; the
    final job keeps its segment's video and thumbnail (and the last frame a continuation starts
    from) and loses the rest. boto3 looks at the bucket; the bytes metric counts what went."""
    fake_kling.control(queued_ms=50, processing_ms=200)
    art = tmp_path / "art-ret"
    one = s3_reeld(reeld_factory, "s3-ret", fake_kling, art, moto)
    final = web.wait_status(one.http_url, web.create_job(one.http_url, ri.unique("s3r"))["id"], timeout=120)
    fid = final["id"]
    # A cancelled job, held back by a run time an hour away until the cancel; objects under its
    # prefix as a job cancelled mid-way leaves them.
    later = int(time.time() * 1000) + 3_600_000
    cid = one.stub.CreateJob(ri.create_request(ri.unique("s3c"), run_at_unix_ms=later), timeout=ri.DEFAULT_TIMEOUT).id
    one.stub.CancelJob(ri.pb.CancelJobRequest(id=cid, reason="test"), timeout=ri.DEFAULT_TIMEOUT)
    for file, size in (("preview.mp4", 3000), ("hls/index.m3u8", 40)):
        moto.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{cid}/{file}", Body=b"v" * size)

    def objects(jid):
        listed = moto.s3.list_objects_v2(Bucket=BUCKET)
        return {o["Key"][len(f"{PREFIX}/{jid}/"):]: o["Size"] for o in listed.get("Contents", [])
                if o["Key"].startswith(f"{PREFIX}/{jid}/")}

    kept = {"final.mp4", "thumb.jpg", "last_frame.png"}
    final_before, cancelled_before = objects(fid), objects(cid)
    assert kept | {"preview.mp4", "hls/index.m3u8"} <= set(final_before), final_before
    assert set(cancelled_before) == {"preview.mp4", "hls/index.m3u8"}
    local_before = {str(p.relative_to(art / fid)): p.stat().st_size for p in (art / fid).rglob("*") if p.is_file()}
    want_bytes = (sum(v for k, v in final_before.items() if k not in kept) + sum(cancelled_before.values())
                  + sum(v for k, v in local_before.items() if k not in kept))

    ri.psql_value(one.db_url, f"UPDATE jobs SET created_at = created_at - interval '40 days', "
                              f"completed_at = completed_at - interval '40 days' "
                              f"WHERE id IN ('{fid}', '{cid}') AND completed_at IS NOT NULL RETURNING 1")
    one.restart()
    ri.wait_for("the retention pass to delete the cancelled job", lambda: ri.psql_value(
        one.db_url, f"SELECT count(*) FROM jobs WHERE id = '{cid}'") == "0", timeout=60)
    ri.wait_for("the pass to finish its events", lambda: ri.psql_value(
        one.db_url, f"SELECT last_event_seq = (SELECT count(*) FROM job_events WHERE job_id = '{fid}') "
                    f"FROM jobs WHERE id = '{fid}'") == "t", timeout=60)

    assert objects(cid) == {}
    assert set(objects(fid)) == kept, objects(fid)
    body = moto.s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{fid}/final.mp4")["Body"].read()
    assert body[4:8] == b"ftyp" and len(body) == final_before["final.mp4"]
    g = one.stub.GetJob(ri.pb.GetJobRequest(id=fid), timeout=ri.DEFAULT_TIMEOUT)
    assert g.status == ri.pb.JOB_STATUS_FINAL_READY and g.result.video_url == final["result"]["videoUrl"], g
    err = ri.rpc_error(one.stub.GetJob, ri.pb.GetJobRequest(id=cid), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, ri.grpc.StatusCode.NOT_FOUND)
    # The segment's video is still served.
    r = media(one.http_url, final["result"]["videoUrl"], timeout=30)
    assert r.status == 200 and r.body == body
    m = ri.scrape(one)
    assert m.get(("reel_retention_pruned_bytes_total", frozenset()), 0) == want_bytes, (m, want_bytes)
    assert m.get(("reel_retention_pruned_rows_total", frozenset({("what", "jobs")})), 0) == 1
