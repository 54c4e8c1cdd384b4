"""Tests of the strict fake OpenAI itself: python3 -m pytest -q -p no:cacheprovider Tests/fake_openai"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_openai import FakeOpenAI, instance_of, strict_schema_problem  # noqa: E402

SCRIPT = os.path.join(HERE, "fake_openai.py")
KEY = "sk-test-key"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "items"],
          "properties": {"ok": {"type": "boolean"}, "items": {"type": "array", "items": {"type": "string"}}}}


def body(**over):
    b = {"model": "gpt-test", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "the bible: Mara"}],
         "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}}
    b.update(over)
    return b


def post(fo, payload, key=KEY, path="/v1/chat/completions", ctype="application/json", timeout=10):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": ctype}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(fo.url + path, data=data, method="POST", headers=headers)
    try:
        with _NO_PROXY.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI(api_key=KEY) as fo:
        yield fo


@pytest.fixture
def fo(server):
    server.reset()
    return server


def assert_error(status, answer, want_status, code=None, type_=None, param=None):
    assert status == want_status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}, answer
    assert answer["error"]["message"]
    if code is not None:
        assert answer["error"]["code"] == code
    if type_ is not None:
        assert answer["error"]["type"] == type_
    if param is not None:
        assert answer["error"]["param"] == param


def test_completion_has_openais_shape_and_fits_the_schema(fo):
    status, headers, a = post(fo, body())
    assert status == 200
    assert a["object"] == "chat.completion" and a["id"].startswith("chatcmpl-") and a["model"] == "gpt-test"
    assert isinstance(a["created"], int)
    (choice,) = a["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    content = json.loads(choice["message"]["content"])
    assert set(content) == {"ok", "items"} and isinstance(content["ok"], bool) and isinstance(content["items"], list)
    u = a["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    s = fo.stats()
    assert s["completions"] == 1 and s["requests"][0]["schema_name"] == "verdict"
    assert s["requests"][0]["messages"][1]["content"] == "the bible: Mara"


def test_key_is_checked(fo):
    for key in (None, "sk-wrong"):
        status, _, a = post(fo, body(), key=key)
        assert_error(status, a, 401, code="invalid_api_key", type_="invalid_request_error")
    assert fo.stats()["counts"] == {"401": 2}


def test_no_key_configured_takes_any_request():
    with FakeOpenAI() as fo:
        status, _, _ = post(fo, body(), key=None)
        assert status == 200


@pytest.mark.parametrize("bad,param", [
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"temperature": 5}, "temperature"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"stream": True}, "stream"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "has space", "schema": SCHEMA, "strict": True}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA, "strict": "yes"}}},
     "response_format.json_schema.strict"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": True}}},
     "response_format.json_schema.schema"),
])
def test_bad_bodies_are_refused_naming_the_parameter(fo, bad, param):
    status, _, a = post(fo, body(**bad))
    assert_error(status, a, 400, type_="invalid_request_error", param=param)


def test_strict_mode_refuses_a_loose_schema(fo):
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    status, _, a = post(fo, body(response_format={"type": "json_schema",
                                                  "json_schema": {"name": "n", "schema": loose, "strict": True}}))
    assert_error(status, a, 400, param="response_format")
    assert "additionalProperties" in a["error"]["message"]
    assert strict_schema_problem(SCHEMA) is None
    partial = dict(SCHEMA, required=["ok"])
    assert "required" in strict_schema_problem(partial)


def test_not_json_and_wrong_content_type(fo):
    status, _, a = post(fo, b"{nope")
    assert_error(status, a, 400)
    status, _, a = post(fo, body(), ctype="text/plain")
    assert_error(status, a, 400)
    status, _, a = post(fo, body(), path="/v1/completions")
    assert_error(status, a, 404)


def test_scripted_errors_in_openais_envelope(fo):
    fo.control(next=[{"error": "rate_limit_exceeded", "retry_after": 2}, {"error": "insufficient_quota"},
                     {"error": "server_error"}, {"error": "overloaded"}])
    status, headers, a = post(fo, body())
    assert_error(status, a, 429, code="rate_limit_exceeded")
    assert headers.get("Retry-After") == "2"
    status, headers, a = post(fo, body())
    assert_error(status, a, 429, code="insufficient_quota", type_="insufficient_quota")
    assert "Retry-After" not in headers
    status, _, a = post(fo, body())
    assert_error(status, a, 500, type_="server_error")
    status, _, a = post(fo, body())
    assert_error(status, a, 503)
    assert post(fo, body())[0] == 200  # the queue is used up
    assert fo.stats()["counts"] == {"429": 2, "500": 1, "503": 1, "200": 1}


def test_scripted_answers(fo):
    fo.control(answers={"verdict": {"ok": False, "items": ["x"]}},
               next=[{"content": "not json at all"}, {"answer": {"ok": "yes"}}, {"finish_reason": "length"},
                     {"refusal": "I can't help with that."}])
    msg = lambda a: a["choices"][0]["message"]  # noqa: E731
    _, _, a = post(fo, body())
    assert msg(a)["content"] == "not json at all"
    _, _, a = post(fo, body())
    assert json.loads(msg(a)["content"]) == {"ok": "yes"}  # off the schema: the fake does what it's told
    _, _, a = post(fo, body())
    assert a["choices"][0]["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(msg(a)["content"])
    _, _, a = post(fo, body())
    assert msg(a)["content"] is None and msg(a)["refusal"] == "I can't help with that."
    _, _, a = post(fo, body())
    assert json.loads(msg(a)["content"]) == {"ok": False, "items": ["x"]}  # the canned answer for the schema


def test_always_and_delay(fo):
    fo.control(always={"error": "overloaded"})
    assert post(fo, body())[0] == 503 and post(fo, body())[0] == 503
    fo.control(always=None, next=[{"delay": 0.5}])
    t = time.monotonic()
    assert post(fo, body())[0] == 200
    assert time.monotonic() - t >= 0.5
    fo.control(next=[{"delay": 2}])
    with pytest.raises(OSError):  # a client timeout
        post(fo, body(), timeout=0.5)


def test_control_refuses_bad_knobs(fo):
    for bad in ({"nope": 1}, {"next": [{"error": "teapot"}]}, {"next": [{"delay": -1}]}, {"delay": "1"},
                {"next": [{"colour": "red"}]}):
        with pytest.raises(ValueError):
            fo.control(**bad)
    assert fo.control() == {"next": [], "always": None, "answers": {}, "delay": 0}


def test_instance_of_fits_nested_schemas():
    s = {"type": "object", "additionalProperties": False, "required": ["a", "b"],
         "properties": {"a": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                           "required": ["n"], "properties": {"n": {"type": "number"}}}},
                        "b": {"type": "string"}}}
    assert instance_of(s) == {"a": [{"n": 1}], "b": "fake b"}


def test_cli_prints_its_address_and_stops_on_sigterm():
    p = subprocess.Popen([sys.executable, SCRIPT, "--api-key", KEY], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("fake-openai listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        req = urllib.request.Request(url + "/_stats")
        with _NO_PROXY.open(req, timeout=5) as r:
            assert json.loads(r.read())["completions"] == 0
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
