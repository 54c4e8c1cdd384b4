"""ListJobs: filters, order, pagination (DESIGN §2)."""

import time

import grpc

import reel_interop as ri
from reel_interop import pb


def _list_all(stub, page_size, **filters):
    """Follows next_page_token; returns the pages (lists of jobs)."""
    pages, token = [], ""
    for _ in range(1000):
        r = stub.ListJobs(pb.ListJobsRequest(page_size=page_size, page_token=token, **filters),
                          timeout=ri.DEFAULT_TIMEOUT)
        pages.append(list(r.jobs))
        token = r.next_page_token
        if not token:
            return pages
    raise AssertionError("ListJobs pagination did not end after 1000 pages")


def _create_spaced(stub, user, n, scene="scene-l"):
    ids = []
    for i in range(n):
        ids.append(stub.CreateJob(ri.create_request(user, scene_id=scene, text=f"list job {i}"),
                                  timeout=ri.DEFAULT_TIMEOUT).id)
        time.sleep(0.005)  # distinct created_at milliseconds, so "newest first" is one order
    return ids


def test_list_by_user_returns_only_that_users_jobs_newest_first(stub):
    user = ri.unique("list")
    ids = _create_spaced(stub, user, 5)
    stub.CreateJob(ri.create_request(ri.unique("other")), timeout=ri.DEFAULT_TIMEOUT)
    r = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=50), timeout=ri.DEFAULT_TIMEOUT)
    jobs = list(r.jobs)
    assert all(j.user_id == user for j in jobs), {j.user_id for j in jobs}
    assert [j.id for j in jobs] == list(reversed(ids)), "not newest first"
    created = [j.created_at_unix_ms for j in jobs]
    assert created == sorted(created, reverse=True)
    assert r.next_page_token == ""


def test_pagination_with_page_size_2_covers_every_job_once(stub):
    user = ri.unique("page")
    ids = _create_spaced(stub, user, 5)
    pages = _list_all(stub, 2, user_id=user)
    assert [len(p) for p in pages] == [2, 2, 1], [len(p) for p in pages]
    listed = [j.id for p in pages for j in p]
    assert listed == list(reversed(ids))
    created = [j.created_at_unix_ms for p in pages for j in p]
    assert created == sorted(created, reverse=True)


def test_pagination_is_stable_while_jobs_change_status(stub):
    """Jobs run (and change status) between page requests; the walk still sees each once."""
    user = ri.unique("pagelive")
    ids = _create_spaced(stub, user, 6)
    seen, token = [], ""
    while True:
        r = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=2, page_token=token),
                          timeout=ri.DEFAULT_TIMEOUT)
        seen += [j.id for j in r.jobs]
        token = r.next_page_token
        if not token:
            break
        time.sleep(0.2)
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen)), seen


def test_list_filters_by_scene_and_status(stub):
    user = ri.unique("filter")
    a = _create_spaced(stub, user, 2, scene="scene-a")
    b = _create_spaced(stub, user, 2, scene="scene-b")
    try:
        stub.CancelJob(pb.CancelJobRequest(id=b[1]), timeout=ri.DEFAULT_TIMEOUT)
    except grpc.RpcError:
        pass  # it may have finished already; the filter check below still holds
    final = {}
    for i in a + b:
        final[i] = ri.wait_for_job(stub, i, want=(pb.JOB_STATUS_FINAL_READY,
                                                  pb.JOB_STATUS_CANCELLED)).status

    by_scene = stub.ListJobs(pb.ListJobsRequest(user_id=user, scene_id="scene-a"),
                             timeout=ri.DEFAULT_TIMEOUT)
    assert sorted(j.id for j in by_scene.jobs) == sorted(a)
    scene_only = stub.ListJobs(pb.ListJobsRequest(scene_id="scene-b", page_size=500),
                               timeout=ri.DEFAULT_TIMEOUT)
    assert set(b) <= {j.id for j in scene_only.jobs}
    assert all(j.scene_id == "scene-b" for j in scene_only.jobs)

    for status in (pb.JOB_STATUS_FINAL_READY, pb.JOB_STATUS_CANCELLED, pb.JOB_STATUS_QUEUED):
        r = stub.ListJobs(pb.ListJobsRequest(user_id=user, status=status),
                          timeout=ri.DEFAULT_TIMEOUT)
        want = sorted(i for i, s in final.items() if s == status)
        assert sorted(j.id for j in r.jobs) == want, f"status filter {ri.status_name(status)}"
        assert all(j.status == status for j in r.jobs)

    dead = stub.ListJobs(pb.ListJobsRequest(user_id=user, dead_lettered_only=True),
                         timeout=ri.DEFAULT_TIMEOUT)
    assert list(dead.jobs) == []


def test_page_size_0_means_50(stub):
    user = ri.unique("fifty")
    futures = [stub.CreateJob.future(ri.create_request(user, text=f"bulk {i}"), timeout=30)
               for i in range(55)]
    ids = [f.result().id for f in futures]
    try:
        assert len(set(ids)) == 55
        first = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=0),
                              timeout=ri.DEFAULT_TIMEOUT)
        assert len(first.jobs) == 50
        assert first.next_page_token
        second = stub.ListJobs(pb.ListJobsRequest(user_id=user, page_token=first.next_page_token),
                               timeout=ri.DEFAULT_TIMEOUT)
        assert len(second.jobs) == 5
        assert second.next_page_token == ""
        assert sorted(j.id for j in list(first.jobs) + list(second.jobs)) == sorted(ids)
    finally:
        ri.cancel_quietly(stub, ids)


def test_list_for_a_user_without_jobs_is_empty(stub):
    r = stub.ListJobs(pb.ListJobsRequest(user_id=ri.unique("nobody")), timeout=ri.DEFAULT_TIMEOUT)
    assert list(r.jobs) == [] and r.next_page_token == ""
