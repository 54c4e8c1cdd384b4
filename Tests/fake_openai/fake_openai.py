#!/usr/bin/env python3
"""A strict fake of OpenAI's published Chat Completions API, for Reel's script-agent tests.

Standalone, standard library only (Python 3.11+). It serves what Reel uses of the API and
refuses what OpenAI refuses, so a client that passes against it speaks the real thing (and any
OpenAI-compatible server: vLLM, Ollama, llama.cpp). Tests steer it through POST /_control
(or FakeOpenAI.control) and read what it saw through GET /_stats (FakeOpenAI.stats).

  POST /v1/chat/completions   "Authorization: Bearer <key>" when the fake has a key
       body: {model: str, messages: [{role: system|user|assistant|developer, content: str}, ...],
              response_format?: {type: text} | {type: json_object}
                              | {type: json_schema, json_schema: {name, schema, strict?, description?}},
              temperature?, top_p?, max_tokens?, max_completion_tokens?, n? (1), seed?, stop?,
              user?, presence_penalty?, frequency_penalty?, stream? (false)}
       -> {id: "chatcmpl-…", object: "chat.completion", created, model, system_fingerprint,
           choices: [{index: 0, message: {role: "assistant", content, refusal, annotations: []},
                      logprobs: null, finish_reason: "stop"|"length"}],
           usage: {prompt_tokens, completion_tokens, total_tokens}}
  Errors, always {"error": {"message", "type", "param", "code"}}:
    401 invalid_api_key (missing or wrong key); 400 invalid_request_error (param names the
    field: a bad body, an unknown argument, a schema strict mode can't take: every object
    needs additionalProperties false and all its properties required); 404 unknown path;
    429 rate_limit_exceeded (with Retry-After when scripted) and 429 insufficient_quota;
    500 server_error; 503 overloaded.

  What the model answers, per request, first match wins:
    1. the next action of the `next` knob (a FIFO, each used once), else the `always` action;
    2. `answers[json_schema.name]` (a canned JSON value, sent as the content's JSON text);
    3. a value made from the request's schema (strings "fake <path>", numbers 1, true,
       one array item), so any schema gets an answer that fits it.
  An action is a dict with any of:
    {"error": "rate_limit_exceeded"|"insufficient_quota"|"server_error"|"overloaded",
     "retry_after": seconds}        an error answer (Retry-After only when given)
    {"answer": <JSON value>}        that value as the content
    {"content": "text"}             that exact content (not JSON, JSON off the schema, …)
    {"finish_reason": "length"}     the content cut in half, finish_reason length
    {"refusal": "text"}             content null, message.refusal set
    {"delay": seconds}              wait before answering (with nothing else: then answer)

Control (no auth): POST /_control with a JSON subset of the knobs (next, always, answers,
delay; unknown knob or bad type -> 400, nothing changed) answers the knob set; GET /_control
the same; GET /_stats {requests: [{path, status, authorized, model, schema_name, messages,
body, at (unix seconds of arrival)}], counts: {status: n}, completions: n}; POST /_reset.

CLI:  python3 fake_openai.py [--host 127.0.0.1] [--port 0] [--api-key KEY] [--no-exit-with-parent]
      prints exactly one line "fake-openai listening on http://HOST:PORT" once ready (the API
      base for clients is that URL + "/v1"), serves until SIGTERM/SIGINT or its parent dies.

Python:  from fake_openai import FakeOpenAI
         fo = FakeOpenAI(api_key="sk-test").start(); fo.base_url  # http://127.0.0.1:PORT/v1
         fo.control(next=[{"error": "rate_limit_exceeded", "retry_after": 1}]); fo.stats(); fo.stop()
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import threading
import time
import uuid
from typing import Any

_COMMON = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_common"))
if _COMMON not in sys.path:
    sys.path.insert(0, _COMMON)
import fake_http  # noqa: E402  (the scaffolding the fakes share: server, lifecycle, CLI)
from fake_http import FakeHandler, FakeServer, FakeService  # noqa: E402

ROLES = {"system", "user", "assistant", "developer"}
KNOWN_ARGS = {"model", "messages", "response_format", "temperature", "top_p", "max_tokens",
              "max_completion_tokens", "n", "seed", "stop", "user", "presence_penalty",
              "frequency_penalty", "stream", "logprobs", "top_logprobs", "store", "metadata"}
SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ERRORS = {
    "rate_limit_exceeded": (429, "Rate limit reached for requests on the fake organization. Please try again later.",
                            "requests", "rate_limit_exceeded"),
    "insufficient_quota": (429, "You exceeded your current quota, please check your plan and billing details.",
                           "insufficient_quota", "insufficient_quota"),
    "server_error": (500, "The server had an error while processing your request. Sorry about that!",
                     "server_error", None),
    "overloaded": (503, "The engine is currently overloaded, please try again later.", "server_error", None),
}
KNOBS = {"next": list, "always": (dict, type(None)), "answers": dict, "delay": (int, float)}
ACTION_KEYS = {"error", "retry_after", "answer", "content", "finish_reason", "refusal", "delay"}


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def _check_action(a: Any) -> None:
    if not isinstance(a, dict) or not set(a) <= ACTION_KEYS:
        raise ValueError(f"an action is a dict with keys from {sorted(ACTION_KEYS)}: {a!r}")
    if "error" in a and a["error"] not in ERRORS:
        raise ValueError(f"unknown error {a['error']!r}: use one of {sorted(ERRORS)}")
    if "finish_reason" in a and a["finish_reason"] not in ("length", "stop"):
        raise ValueError("finish_reason must be length or stop")
    for k in ("retry_after", "delay"):
        if k in a and (isinstance(a[k], bool) or not isinstance(a[k], (int, float)) or a[k] < 0):
            raise ValueError(f"{k} must be a number >= 0")
    for k in ("content", "refusal"):
        if k in a and not isinstance(a[k], str):
            raise ValueError(f"{k} must be a string")


def strict_schema_problem(schema: Any, path: str = "schema") -> str | None:
    """What OpenAI's strict mode refuses in a schema (None when it takes it)."""
    if not isinstance(schema, dict):
        return f"{path} must be an object"
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return f"{path}: an object needs properties"
        if schema.get("additionalProperties") is not False:
            return f"{path}: 'additionalProperties' is required to be supplied and to be false"
        req = schema.get("required")
        if not isinstance(req, list) or set(req) != set(props):
            return f"{path}: 'required' is required to be supplied and to be an array including every key in properties"
        for k, v in props.items():
            p = strict_schema_problem(v, f"{path}.properties.{k}")
            if p:
                return p
    elif t == "array":
        if "items" not in schema:
            return f"{path}: an array needs items"
        return strict_schema_problem(schema["items"], f"{path}.items")
    elif t not in ("string", "number", "integer", "boolean", "null"):
        return f"{path}: unsupported type {t!r}"
    return None


def instance_of(schema: dict, path: str = "") -> Any:
    """A value that fits `schema` (the fake's default answer)."""
    t = schema.get("type")
    if t == "object":
        return {k: instance_of(v, f"{path}.{k}" if path else k) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [instance_of(schema.get("items", {}), path + "[0]")]
    if t == "string":
        return f"fake {path or 'text'}"
    if t in ("number", "integer"):
        return 1
    if t == "boolean":
        return True
    return None


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def validate_body(b: Any) -> dict:
    """The request as OpenAI checks it; raises _BadRequest naming the parameter."""
    if not isinstance(b, dict):
        raise _BadRequest("We could not parse the JSON body of your request. The body must be a JSON object.")
    for k in b:
        if k not in KNOWN_ARGS:
            raise _BadRequest(f"Unrecognized request argument supplied: {k}", k)
    model = b.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    msgs = b.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _BadRequest("[] is too short - 'messages'" if msgs == [] else "Missing required parameter: 'messages'.",
                          "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _BadRequest(f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]")
        if m.get("role") not in ROLES:
            raise _BadRequest(f"Invalid value: {m.get('role')!r}. Supported values are: 'system', 'assistant', "
                              f"'user' and 'developer'.", f"messages[{i}].role")
        if not isinstance(m.get("content"), str):
            raise _BadRequest(f"Invalid type for 'messages[{i}].content': expected a string.", f"messages[{i}].content")
        extra = set(m) - {"role", "content", "name"}
        if extra:
            raise _BadRequest(f"Unrecognized argument in 'messages[{i}]': {sorted(extra)[0]}", f"messages[{i}]")
    if b.get("stream") not in (None, False):
        raise _BadRequest("This fake does not stream: stream must be false.", "stream")
    if b.get("n") not in (None, 1):
        raise _BadRequest("n must be 1 here.", "n")
    rf = b.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise _BadRequest("Invalid value for 'response_format.type': supported values are 'text', "
                              "'json_object' and 'json_schema'.", "response_format.type")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise _BadRequest("Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema")
            extra = set(js) - {"name", "schema", "strict", "description"}
            if extra:
                raise _BadRequest(f"Unrecognized argument: response_format.json_schema.{sorted(extra)[0]}",
                                  "response_format.json_schema")
            if not isinstance(js.get("name"), str) or not SCHEMA_NAME.match(js["name"]):
                raise _BadRequest("Invalid 'response_format.json_schema.name': must match ^[a-zA-Z0-9_-]{1,64}$.",
                                  "response_format.json_schema.name")
            if "strict" in js and not isinstance(js["strict"], bool):
                raise _BadRequest("Invalid type for 'response_format.json_schema.strict': expected a boolean.",
                                  "response_format.json_schema.strict")
            if not isinstance(js.get("schema"), dict):
                raise _BadRequest("Missing required parameter: 'response_format.json_schema.schema'.",
                                  "response_format.json_schema.schema")
            if js.get("strict") is True:
                if js["schema"].get("type") != "object":
                    raise _BadRequest("Invalid schema for response_format '%s': schema must be a JSON Schema of "
                                      "'type: \"object\"'." % js["name"], "response_format")
                p = strict_schema_problem(js["schema"])
                if p:
                    raise _BadRequest(f"Invalid schema for response_format '{js['name']}': {p}.", "response_format")
    if "temperature" in b and (isinstance(b["temperature"], bool) or not isinstance(b["temperature"], (int, float))
                               or not 0 <= b["temperature"] <= 2):
        raise _BadRequest("Invalid 'temperature': must be a number between 0 and 2.", "temperature")
    return b


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.knobs: dict[str, Any] = {"next": [], "always": None, "answers": {}, "delay": 0}
            self.requests: list[dict[str, Any]] = []
            self.counts: dict[str, int] = {}
            self.completions = 0

    def control(self, updates: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(updates, dict):
            raise ValueError("control takes a JSON object")
        for k, v in updates.items():
            if k not in KNOBS:
                raise ValueError(f"unknown knob {k!r}: use one of {sorted(KNOBS)}")
            if isinstance(v, bool) or not isinstance(v, KNOBS[k]):
                raise ValueError(f"knob {k!r} has the wrong type")
        for a in updates.get("next", []):
            _check_action(a)
        if updates.get("always") is not None:
            _check_action(updates["always"])
        if "delay" in updates and updates["delay"] < 0:
            raise ValueError("delay must be >= 0")
        with self.lock:
            self.knobs.update(copy.deepcopy(updates))
            return copy.deepcopy(self.knobs)

    def get_knobs(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.knobs)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": copy.deepcopy(self.requests), "counts": dict(self.counts),
                    "completions": self.completions}

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)
            key = str(entry["status"])
            self.counts[key] = self.counts.get(key, 0) + 1
            if entry["status"] == 200:
                self.completions += 1

    def take_action(self) -> tuple[dict | None, dict, float]:
        with self.lock:
            action = self.knobs["next"].pop(0) if self.knobs["next"] else self.knobs["always"]
            return copy.deepcopy(action), copy.deepcopy(self.knobs["answers"]), float(self.knobs["delay"])


class _Handler(FakeHandler):
    server_version = "fake-openai/1.0"
    max_body = 64 * 1024 * 1024
    debug_env = "FAKE_OPENAI_LOG"

    def extra_headers(self) -> dict[str, str]:
        return {"x-request-id": "req_" + uuid.uuid4().hex}

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, obj, headers)

    def _error(self, status: int, message: str, type_: str, param: str | None, code: str | None,
               headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, headers)

    def dispatch(self, method: str) -> None:
        if method not in ("GET", "POST"):
            self.send_error(501, f"Unsupported method ({method!r})")
            return
        body = self.read_body()
        if body is None:
            return self._error(400, "We could not parse the body of your request: malformed framing.",
                               "invalid_request_error", None, None)
        if self.control_routes(method, self.path, body):
            return
        if method != "POST" or self.path != "/v1/chat/completions":
            return self._error(404, f"Invalid URL ({method} {self.path})", "invalid_request_error", None, None)
        self._completion(body)

    def _completion(self, raw: bytes) -> None:
        state = self.server.state
        entry: dict[str, Any] = {"path": self.path, "at": time.time(), "status": 0, "authorized": True, "model": None,
                                 "schema_name": None, "messages": [], "body": None}

        def done(status: int) -> None:
            entry["status"] = status
            state.record(entry)

        key = self.server.api_key
        if key is not None:
            auth = self.headers.get("Authorization") or ""
            if auth != f"Bearer {key}":
                entry["authorized"] = False
                done(401)
                msg = ("You didn't provide an API key. You need to provide your API key in an Authorization "
                       "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)." if not auth else
                       "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.")
                return self._error(401, msg, "invalid_request_error", None, "invalid_api_key")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype != "application/json":
                raise _BadRequest("Content-Type must be application/json.")
            try:
                b = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _BadRequest("We could not parse the JSON body of your request. (HINT: This likely means you "
                                  "aren't using your HTTP library correctly.)") from None
            validate_body(b)
        except _BadRequest as e:
            done(400)
            return self._error(400, e.message, "invalid_request_error", e.param, None)
        rf = b.get("response_format") or {}
        schema_name = rf.get("json_schema", {}).get("name") if rf.get("type") == "json_schema" else None
        entry.update(model=b["model"], schema_name=schema_name, messages=b["messages"], body=b)

        action, answers, delay = state.take_action()
        action = action or {}
        wait = float(action.get("delay", 0)) + delay
        if wait > 0:
            time.sleep(wait)
        if "error" in action:
            status, message, type_, code = ERRORS[action["error"]]
            headers = {}
            if "retry_after" in action:
                ra = action["retry_after"]
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            done(status)
            return self._error(status, message, type_, None, code, headers)

        finish = "stop"
        refusal = None
        if "refusal" in action:
            content, refusal = None, action["refusal"]
        elif "content" in action:
            content = action["content"]
        else:
            if "answer" in action:
                value = action["answer"]
            elif schema_name is not None and schema_name in answers:
                value = answers[schema_name]
            elif schema_name is not None:
                value = instance_of(rf["json_schema"]["schema"])
            else:
                value = {"text": "fake answer"} if rf.get("type") == "json_object" else None
            content = json.dumps(value) if value is not None else "A fake answer."
        if action.get("finish_reason") == "length" and content is not None:
            content, finish = content[: max(1, len(content) // 2)], "length"
        prompt_tokens = sum(_tokens(m["content"]) + 4 for m in b["messages"])
        completion_tokens = _tokens(content or refusal or "")
        done(200)
        self._send(200, {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": b["model"],
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0,
                         "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


class FakeOpenAI(FakeService):
    """The fake, in process: start() serves on a background thread."""

    name = "fake-openai"
    handler = _Handler

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.api_key = api_key
        self._state = _State()
        super().__init__(host, port)

    def _configure(self, server: FakeServer) -> None:
        server.api_key = self.api_key

    @property
    def base_url(self) -> str:
        """The API base as OpenAI's SDKs and Reel take it (with /v1)."""
        return self.url + "/v1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Strict fake of OpenAI's Chat Completions API for Reel's tests.")
    fake_http.add_common_args(ap)
    ap.add_argument("--api-key", default=None, help="require this Bearer key (default: none checked)")
    args = ap.parse_args(argv)
    return fake_http.serve_until_stopped(FakeOpenAI(args.host, args.port, api_key=args.api_key), args)


if __name__ == "__main__":
    sys.exit(main())
