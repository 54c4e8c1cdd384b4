"""Validation → INVALID_ARGUMENT naming the field; unknown ids → NOT_FOUND (DESIGN §2)."""

import time
import uuid

import grpc
import pytest

import reel_interop as ri
from reel_interop import pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _create(**overrides):
    fields = dict(user_id=ri.unique("valid"), scene_id="scene-v", type=pb.JOB_TYPE_SCENE_CREATION,
                  input_text="A valid scene")
    fields.update(overrides)
    return pb.CreateJobRequest(**fields)


BAD_CREATES = {
    "empty user_id": (dict(user_id=""), "user_id"),
    "empty scene_id": (dict(scene_id=""), "scene_id"),
    "empty input_text": (dict(input_text=""), "input_text"),
    "input_text of 10,001 characters": (dict(input_text="a" * 10_001), "input_text"),
    "input_text of 10,001 two-byte characters": (dict(input_text="é" * 10_001), "input_text"),
    "unspecified type": (dict(type=pb.JOB_TYPE_UNSPECIFIED), "type"),
    "user_id with a colon": (dict(user_id="alice:bob"), "user_id"),
    "user_id with a space": (dict(user_id="alice bob"), "user_id"),
    "user_id with a slash": (dict(user_id="alice/bob"), "user_id"),
    "user_id of 129 characters": (dict(user_id="u" * 129), "user_id"),
    "user_id with a non-ASCII letter": (dict(user_id="josé"), "user_id"),
    "scene_id with a colon": (dict(scene_id="scene:1"), "scene_id"),
    "scene_id of 129 characters": (dict(scene_id="s" * 129), "scene_id"),
    # Issue #17 (DESIGN §2): a run time more than a year ahead, a deadline in the past, a
    # webhook URL that is not http(s) or aims at a private address (no --webhook-allow-private).
    "run_at_unix_ms over a year ahead": (dict(run_at_unix_ms=int(time.time() * 1000) + 367 * 86_400_000),
                                         "run_at_unix_ms"),
    "negative run_at_unix_ms": (dict(run_at_unix_ms=-1), "run_at_unix_ms"),
    "deadline past any timestamp": (dict(deadline_unix_ms=9_223_372_036_854_775_807), "deadline_unix_ms"),
    "deadline in the past": (dict(deadline_unix_ms=int(time.time() * 1000) - 1000), "deadline_unix_ms"),
    "deadline before run_at": (dict(run_at_unix_ms=int(time.time() * 1000) + 3_600_000,
                                    deadline_unix_ms=int(time.time() * 1000) + 60_000), "deadline_unix_ms"),
    "webhook_url not http(s)": (dict(webhook_url="ftp://hooks.example.com/x"), "webhook_url"),
    "webhook_url without a host": (dict(webhook_url="https:///x"), "webhook_url"),
    "webhook_url at loopback": (dict(webhook_url="http://127.0.0.1:9/hook"), "webhook_url"),
    "webhook_url at localhost": (dict(webhook_url="http://localhost/hook"), "webhook_url"),
    "webhook_url at a private address": (dict(webhook_url="https://10.1.2.3/hook"), "webhook_url"),
    "webhook_url at link-local (cloud metadata)": (dict(webhook_url="http://169.254.169.254/latest"), "webhook_url"),
    "webhook_url at IPv6 loopback": (dict(webhook_url="http://[::1]:8080/hook"), "webhook_url"),
    "webhook_url at IPv4-mapped private": (dict(webhook_url="http://[::ffff:192.168.1.1]/hook"), "webhook_url"),
    "webhook_url at the unspecified address": (dict(webhook_url="http://0.0.0.0/hook"), "webhook_url"),
}


@pytest.mark.parametrize("case", list(BAD_CREATES))
def test_create_job_rejects_invalid_field(stub, case):
    overrides, field = BAD_CREATES[case]
    err = ri.rpc_error(stub.CreateJob, _create(**overrides), timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, INVALID, mentions=field, what=case)


GOOD_CREATES = {
    "input_text of exactly 10,000 characters": dict(input_text="a" * 10_000),
    "input_text of 10,000 'é' (20,000 bytes)": dict(input_text="é" * 10_000),
    "input_text of 10,000 emoji (40,000 bytes)": dict(input_text="🎬" * 10_000),
    "user_id of exactly 128 characters": dict(user_id="u" * 116 + uuid.uuid4().hex[:12]),
    "ids using every allowed character class": dict(user_id=ri.unique("A.b_C-9"),
                                                     scene_id="Scene_1.2-x"),
    "a public https webhook_url": dict(webhook_url="https://hooks.example.com/reel?x=1"),
    "a run time an hour ahead and a deadline after it": dict(
        run_at_unix_ms=int(time.time() * 1000) + 3_600_000, deadline_unix_ms=int(time.time() * 1000) + 7_200_000),
}


@pytest.mark.parametrize("case", list(GOOD_CREATES))
def test_create_job_accepts_boundary_value(stub, case):
    req = _create(**GOOD_CREATES[case])
    job = stub.CreateJob(req, timeout=ri.DEFAULT_TIMEOUT)
    assert job.input_text == req.input_text
    assert job.user_id == req.user_id
    assert (job.run_at_unix_ms, job.deadline_unix_ms, job.webhook_url) == (
        req.run_at_unix_ms, req.deadline_unix_ms, req.webhook_url), "the job shows what was asked"
    ri.cancel_quietly(stub, [job.id])


def test_list_jobs_rejects_page_size_over_500(stub):
    err = ri.rpc_error(stub.ListJobs, pb.ListJobsRequest(user_id=ri.unique("list"), page_size=501),
                       timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, INVALID, mentions="page_size")


def test_list_jobs_accepts_page_size_500(stub):
    r = stub.ListJobs(pb.ListJobsRequest(user_id=ri.unique("list"), page_size=500),
                      timeout=ri.DEFAULT_TIMEOUT)
    assert list(r.jobs) == []


MALFORMED_IDS = ["", "not-a-uuid", "1234", str(uuid.uuid4()) + "0", str(uuid.uuid4())[:-1] + "g",
                 "' OR 1=1 --"]


def _calls(stub, job_id):
    return {
        "GetJob": lambda: stub.GetJob(pb.GetJobRequest(id=job_id), timeout=ri.DEFAULT_TIMEOUT),
        "CancelJob": lambda: stub.CancelJob(pb.CancelJobRequest(id=job_id),
                                            timeout=ri.DEFAULT_TIMEOUT),
        "RetryJob": lambda: stub.RetryJob(pb.RetryJobRequest(id=job_id),
                                          timeout=ri.DEFAULT_TIMEOUT),
        "WatchJob": lambda: ri.watch(stub, job_id, timeout=ri.DEFAULT_TIMEOUT),
    }


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "RetryJob", "WatchJob"])
@pytest.mark.parametrize("bad_id", MALFORMED_IDS, ids=lambda s: repr(s))
def test_malformed_id_is_invalid_argument(stub, method, bad_id):
    err = ri.rpc_error(_calls(stub, bad_id)[method])
    ri.assert_code(err, INVALID, mentions="id", what=f"{method}(id={bad_id!r})")


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "RetryJob", "WatchJob"])
def test_unknown_well_formed_id_is_not_found(stub, method):
    unknown = str(uuid.uuid4())
    err = ri.rpc_error(_calls(stub, unknown)[method])
    ri.assert_code(err, grpc.StatusCode.NOT_FOUND, what=f"{method}(id={unknown})")


def test_watch_rejects_negative_after_seq(stub):
    job = stub.CreateJob(ri.create_request(ri.unique("neg")), timeout=ri.DEFAULT_TIMEOUT)
    err = ri.rpc_error(ri.watch, stub, job.id, after_seq=-1, timeout=ri.DEFAULT_TIMEOUT)
    ri.assert_code(err, INVALID, mentions="after_seq")
