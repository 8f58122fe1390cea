"""``POST /v1/traces`` and ``/v1/logs`` over real HTTP, on both backends, fed by real producers: the
OpenTelemetry SDK's OTLP/HTTP exporters, OTLP JSON written per the spec, and instrumentations around
real clients (tests/test_otlp_instrumentations.py). Each test reads the stored transcript back through
the read API and compares it whole."""

from __future__ import annotations

import gzip
import json

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from conftest import TEST_LIMITS, Project, RunningServer

PROTOBUF = "application/x-protobuf"


def transcript(server: RunningServer, project: Project, conversation_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["message"]) for m in conversation(server, project, conversation_id)["messages"]]


def conversation(server: RunningServer, project: Project, conversation_id: str) -> dict:
    with server.client(project.read_token) as client:
        answer = client.get(f"/api/v1/conversations/{conversation_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def conversation_ids(server: RunningServer, project: Project) -> list[str]:
    with server.client(project.read_token) as client:
        answer = client.get("/api/v1/conversations", params={"start_time": "2000-01-01T00:00:00Z", "per_page": 50})
    assert answer.status_code == 200, answer.text
    return sorted(c["id"] for c in answer.json()["conversations"])


def recorded() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider whose finished spans are kept, so a test can export them as it likes
    (together, split, twice) with the real OTLP/HTTP exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def export(server: RunningServer, token: str, spans: list[ReadableSpan], **headers: str) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=f"{server.base_url}/v1/traces", headers={"x-convolens-token": token, **headers}, timeout=30
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def messages_json(*messages: tuple[str, str]) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in messages])


SYSTEM = json.dumps([{"type": "text", "content": "You are a travel agent."}])


def agent_trace(provider: TracerProvider, session: str, history: list[tuple[str, str]], reply: str) -> None:
    """An agent run as the GenAI conventions describe it: an invoke_agent span around two chat spans,
    the first asking for a tool, the second answering with the tool's result in its input."""
    tracer = provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent travel") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.conversation.id", session)
        agent.set_attribute("user.id", "traveller-7")
        call = {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Oslo"}}
        with tracer.start_as_current_span("chat gpt-4o") as first:
            first.set_attribute("gen_ai.operation.name", "chat")
            first.set_attribute("gen_ai.conversation.id", session)
            first.set_attribute("gen_ai.request.model", "gpt-4o")
            first.set_attribute("gen_ai.system_instructions", SYSTEM)
            first.set_attribute("gen_ai.input.messages", messages_json(*history))
            first.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [call], "finish_reason": "tool_call"}]),
            )
        with tracer.start_as_current_span("execute_tool weather") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
        with tracer.start_as_current_span("chat gpt-4o") as second:
            second.set_attribute("gen_ai.operation.name", "chat")
            second.set_attribute("gen_ai.conversation.id", session)
            second.set_attribute("gen_ai.request.model", "gpt-4o")
            second.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            second.set_attribute("gen_ai.usage.input_tokens", 120)
            second.set_attribute("gen_ai.usage.output_tokens", 17)
            second.set_attribute("gen_ai.system_instructions", SYSTEM)
            tool_answer = {"type": "tool_call_response", "id": "call_1", "response": "4 degrees, rain"}
            second.set_attribute(
                "gen_ai.input.messages",
                json.dumps(
                    [
                        *json.loads(messages_json(*history)),
                        {"role": "assistant", "parts": [call]},
                        {"role": "tool", "parts": [tool_answer]},
                    ]
                ),
            )
            second.set_attribute("gen_ai.output.messages", messages_json(("assistant", reply)))


def test_sdk_exporter_protobuf_agent_turns_sessions_and_retries(server: RunningServer, project: Project) -> None:
    provider, memory = recorded()
    agent_trace(provider, "session-1", [("user", "Weather in Oslo?")], "Rainy, 4 degrees.")
    first_trace = list(memory.get_finished_spans())
    assert export(server, project.ingest_token, first_trace) is SpanExportResult.SUCCESS
    turn_one = [
        ("system", "You are a travel agent."),
        ("user", "Weather in Oslo?"),
        ("assistant", ""),
        ("tool", "4 degrees, rain"),
        ("assistant", "Rainy, 4 degrees."),
    ]
    assert transcript(server, project, "session-1") == turn_one

    # The next trace of the session resends the history (as apps do), with the tool call and its
    # result; only the new question and the answers after it are appended.
    memory.clear()
    history = [("user", "Weather in Oslo?"), ("assistant", "Rainy, 4 degrees."), ("user", "And tomorrow?")]
    agent_trace(provider, "session-1", history, "Sunny, 9 degrees.")
    second_trace = list(memory.get_finished_spans())
    assert export(server, project.ingest_token, second_trace) is SpanExportResult.SUCCESS
    turn_two = [
        ("user", "And tomorrow?"),
        ("assistant", ""),
        ("tool", "4 degrees, rain"),
        ("assistant", "Sunny, 9 degrees."),
    ]
    assert transcript(server, project, "session-1") == turn_one + turn_two

    # An exporter's retry of both traces stores nothing twice.
    assert export(server, project.token, first_trace + second_trace) is SpanExportResult.SUCCESS
    stored = conversation(server, project, "session-1")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == turn_one + turn_two
    assert stored["user_id"] == "traveller-7"
    reply = stored["messages"][-1]
    assert (reply["model"], reply["input_tokens"], reply["output_tokens"]) == ("gpt-4o-2024-08-06", 120, 17)
    assert reply["latency_ms"] >= 0
    assert reply["id"] == f"{second_trace[0].context.trace_id:032x}-6"  # trace id and place in the turn
    tool_call = stored["messages"][2]
    assert tool_call.get("name") is None and conversation_ids(server, project) == ["session-1"]


def test_spans_of_one_trace_in_separate_requests_make_one_turn(server: RunningServer, project: Project) -> None:
    provider, memory = recorded()
    agent_trace(provider, "split", [("user", "Weather in Oslo?")], "Rainy.")
    spans = list(memory.get_finished_spans())
    chats = [s for s in spans if s.name.startswith("chat")]
    others = [s for s in spans if not s.name.startswith("chat")]
    expected = [
        ("system", "You are a travel agent."),
        ("user", "Weather in Oslo?"),
        ("assistant", ""),
        ("tool", "4 degrees, rain"),
        ("assistant", "Rainy."),
    ]
    # The first chat span alone (an export before the agent finished), then the rest.
    assert export(server, project.token, [chats[0]]) is SpanExportResult.SUCCESS
    assert transcript(server, project, "split") == expected[:3]
    assert export(server, project.token, [chats[1], *others]) is SpanExportResult.SUCCESS
    assert transcript(server, project, "split") == expected
    # Out of order: the later span first, then the earlier one's retry adds nothing.
    provider, memory = recorded()
    agent_trace(provider, "split-reversed", [("user", "Weather in Oslo?")], "Rainy.")
    chats = [s for s in memory.get_finished_spans() if s.name.startswith("chat")]
    assert export(server, project.token, [chats[1]]) is SpanExportResult.SUCCESS
    assert export(server, project.token, [chats[0]]) is SpanExportResult.SUCCESS
    assert transcript(server, project, "split-reversed") == expected


def test_a_trace_without_session_is_its_own_conversation_and_errors_are_kept(
    server: RunningServer, project: Project
) -> None:
    provider, memory = recorded()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /health"):
        pass  # not an LLM span: ignored
    with tracer.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.input.messages", messages_json(("user", "Hello?")))
        span.set_attribute("enduser.id", "anon-3")
        span.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
    spans = list(memory.get_finished_spans())
    assert export(server, project.token, spans) is SpanExportResult.SUCCESS
    trace_id = format(spans[1].context.trace_id, "032x")
    assert conversation_ids(server, project) == [trace_id]
    stored = conversation(server, project, trace_id)
    assert [(m["role"], m["message"], m.get("error")) for m in stored["messages"]] == [
        ("user", "Hello?", None),
        ("assistant", "", "429 Too Many Requests"),
    ]
    assert stored["user_id"] == "anon-3"


def test_pii_is_scrubbed_before_storage(server: RunningServer, project: Project) -> None:
    provider, memory = recorded()
    with provider.get_tracer("t").start_as_current_span("chat") as span:
        span.set_attribute("session.id", "pii")
        span.set_attribute("gen_ai.input.messages", messages_json(("user", "Mail me at jane.doe@example.com")))
        span.set_attribute("gen_ai.output.messages", messages_json(("assistant", "Sure.")))
    assert export(server, project.token, list(memory.get_finished_spans())) is SpanExportResult.SUCCESS
    [(_, question), _] = transcript(server, project, "pii")
    assert "jane.doe@example.com" not in question and question.startswith("Mail me at ")


# -- OTLP JSON, written per the spec ---------------------------------------------------------------


def _value(value: object) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": value}


def json_request(spans: list[dict], resource: dict | None = None) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": k, "value": _value(v)} for k, v in (resource or {}).items()]},
                "scopeSpans": [{"scope": {"name": "hand-written"}, "spans": spans}],
            }
        ]
    }


def json_span(trace: str, span: str, attributes: dict, start: int = 1_760_000_000, **extra: object) -> dict:
    return {
        "traceId": trace,
        "spanId": span,
        "name": "llm",
        "kind": 3,
        "startTimeUnixNano": str(start * 10**9),
        "endTimeUnixNano": str(start * 10**9 + 250_000_000),
        "attributes": [{"key": k, "value": _value(v)} for k, v in attributes.items()],
        **extra,
    }


def post(server: RunningServer, token: str, body: bytes, content_type: str = "application/json", **headers: str):
    return httpx.post(
        f"{server.base_url}/v1/traces",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, **headers},
        timeout=30,
    )


TRACE = "5B8EFFF798038103D269B633813FC60C"


def openinference_attributes(question: str, answer: str) -> dict:
    return {
        "openinference.span.kind": "LLM",
        "session.id": "oi-session",
        "user.id": "u-42",
        "llm.model_name": "claude-sonnet",
        "llm.token_count.prompt": 31,
        "llm.token_count.completion": 9,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.contents.0.message_content.type": "text",
        "llm.input_messages.1.message.contents.0.message_content.text": question,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": answer,
        "input.value": "ignored: the messages above take precedence",
    }


def test_otlp_json_gzip_openinference_and_a_chain_span(server: RunningServer, project: Project) -> None:
    spans = [
        json_span(
            TRACE,
            "EEE19B7EC3C1B174",
            openinference_attributes("What is OTLP?", "A protocol."),
            parentSpanId="1111111111111111",
        ),
        json_span(
            TRACE,
            "1111111111111111",
            {"openinference.span.kind": "CHAIN", "input.value": "What is OTLP?", "output.value": "A protocol."},
            start=1_760_000_001,  # ends last: a workflow span, not a model call, so not the turn
        ),
    ]
    body = gzip.compress(orjson.dumps(json_request(spans, {"service.name": "docs-bot"})))
    answer = post(server, project.token, body, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json") and answer.json() == {}
    stored = conversation(server, project, "oi-session")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == [
        ("system", "Be brief."),
        ("user", "What is OTLP?"),
        ("assistant", "A protocol."),
    ]
    assert stored["user_id"] == "u-42"
    reply = stored["messages"][-1]
    assert (reply["model"], reply["input_tokens"], reply["output_tokens"], reply["latency_ms"]) == (
        "claude-sonnet",
        31,
        9,
        250.0,
    )


def test_json_indexed_prompt_attributes_and_traceloop_session(server: RunningServer, project: Project) -> None:
    attributes = {
        "llm.request.type": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Tell me a joke",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Why did the span cross the process?",
        "gen_ai.usage.prompt_tokens": 5,
        "traceloop.association.properties.session_id": "tl-session",
        "traceloop.association.properties.user_id": "tl-user",
    }
    workflow = {
        "traceloop.span.kind": "workflow",
        "traceloop.entity.input": json.dumps({"args": ["Tell me a joke"], "kwargs": {}}),
        "traceloop.entity.output": json.dumps("Why did the span cross the process?"),
    }
    body = orjson.dumps(
        json_request(
            [
                json_span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", attributes),
                json_span("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7", workflow, start=1_760_000_002),
            ]
        )
    )
    assert post(server, project.token, body).status_code == 200
    stored = conversation(server, project, "tl-session")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == [
        ("user", "Tell me a joke"),
        ("assistant", "Why did the span cross the process?"),
    ]
    assert stored["user_id"] == "tl-user" and stored["messages"][-1]["input_tokens"] == 5


def test_json_workflow_span_alone_makes_the_turn(server: RunningServer, project: Project) -> None:
    workflow = {
        "traceloop.span.kind": "workflow",
        "session.id": "wf",
        "traceloop.entity.input": json.dumps({"args": [], "kwargs": {"question": "Where is my order?"}}),
        "traceloop.entity.output": json.dumps({"answer": "It ships today."}),
    }
    body = orjson.dumps(json_request([json_span("1" * 32, "2" * 16, workflow)]))
    assert post(server, project.token, body).status_code == 200
    assert transcript(server, project, "wf") == [("user", "Where is my order?"), ("assistant", "It ships today.")]


# -- bad input -----------------------------------------------------------------------------------------


def _protobuf_request(content: str, session: str = "bad") -> bytes:
    body = json_request(
        [
            json_span(
                "3" * 32,
                "4" * 16,
                {"session.id": session, "gen_ai.input.messages": messages_json(("user", content))},
            )
        ]
    )
    from google.protobuf import json_format

    # The JSON mapping's ids are hex; protobuf's own JSON parser reads bytes as base64, so set them after.
    for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span.pop("traceId"), span.pop("spanId")
    message = json_format.ParseDict(body, ExportTraceServiceRequest())
    for span in message.resource_spans[0].scope_spans[0].spans:
        span.trace_id, span.span_id = bytes.fromhex("3" * 32), bytes.fromhex("4" * 16)
    return message.SerializeToString()


def test_bad_otlp_is_a_4xx_naming_the_problem(server: RunningServer, project: Project) -> None:
    good = _protobuf_request("hello")
    truncated = post(server, project.token, good[: len(good) // 2], PROTOBUF)
    assert truncated.status_code == 400
    assert b"ExportTraceServiceRequest" in truncated.content  # a google.rpc.Status naming the problem
    wrong_type = post(server, project.token, good, "text/plain")
    assert wrong_type.status_code == 415 and "Content-Type" in wrong_type.json()["detail"]
    not_json = post(server, project.token, b"{not json")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
    wrong_shape = post(server, project.token, orjson.dumps({"resourceSpans": [{"scopeSpans": {"spans": 1}}]}))
    assert wrong_shape.status_code == 400 and wrong_shape.json()["errors"][0]["field"] == "resourceSpans[0].scopeSpans"
    huge = _protobuf_request("x" * (TEST_LIMITS.max_body_bytes + 10))
    assert post(server, project.token, huge, PROTOBUF).status_code == 413
    assert post(server, "cl_" + "Z" * 43, good, PROTOBUF).status_code == 401
    assert post(server, project.read_token, good, PROTOBUF).status_code == 403
    assert conversation_ids(server, project) == []
    # The good one stores; a retry of it stores nothing more.
    for _ in range(2):
        answer = post(server, project.ingest_token, good, PROTOBUF)
        assert answer.status_code == 200 and answer.headers["content-type"] == PROTOBUF
        assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")
    assert transcript(server, project, "bad") == [("user", "hello")]


def test_spans_over_a_bound_are_rejected_in_partial_success_and_the_rest_stored(
    server: RunningServer, project: Project
) -> None:
    too_long = json_span(
        "5" * 32,
        "6" * 16,
        {
            "session.id": "long",
            "gen_ai.input.messages": messages_json(("user", "y" * (TEST_LIMITS.max_content_chars + 1))),
        },
    )
    many = json.dumps(
        [
            {"role": "user", "parts": [{"type": "text", "content": str(i)}]}
            for i in range(TEST_LIMITS.max_messages_per_conversation + 1)
        ]
    )
    too_many = json_span("7" * 32, "8" * 16, {"session.id": "many", "gen_ai.input.messages": many})
    fine = json_span("9" * 32, "a" * 16, {"session.id": "fine", "gen_ai.input.messages": messages_json(("user", "ok"))})
    no_ids = json_span("", "", {"gen_ai.input.messages": messages_json(("user", "lost"))})
    answer = post(server, project.token, orjson.dumps(json_request([too_long, too_many, fine, no_ids])))
    assert answer.status_code == 200, answer.text
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"
    assert "message 0 content" in partial["errorMessage"] and "more than 50 messages" in partial["errorMessage"]
    assert conversation_ids(server, project) == ["fine"]


def _nested_json(depth: int) -> str:
    """An AnyValue ``depth`` kvlists deep, as JSON text (orjson itself refuses to write past 254 levels)."""
    return '{"kvlistValue":{"values":[{"key":"k","value":' * depth + '{"stringValue":"deep"}' + "}]}}" * depth


def _length_delimited(tag: int, payload: bytes) -> bytes:
    size, length = bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes([tag]) + bytes(size) + payload


def _nested_protobuf(depth: int) -> bytes:
    """An ExportTraceServiceRequest whose one span's attribute is an AnyValue ``depth`` kvlists deep,
    written at the wire level (the protobuf library refuses to build one past its own limit)."""
    value = _length_delimited(0x0A, b"deep")  # AnyValue.string_value
    for _ in range(depth):
        key_value = _length_delimited(0x0A, b"k") + _length_delimited(0x12, value)
        value = _length_delimited(0x32, _length_delimited(0x0A, key_value))  # AnyValue.kvlist_value.values
    attribute = _length_delimited(0x0A, b"gen_ai.input.messages") + _length_delimited(0x12, value)
    span = (
        _length_delimited(0x0A, bytes.fromhex("d" * 32))
        + _length_delimited(0x12, bytes.fromhex("e" * 16))
        + _length_delimited(0x4A, attribute)  # Span.attributes (field 9)
    )
    return _length_delimited(0x0A, _length_delimited(0x12, _length_delimited(0x12, span)))


def test_deep_nesting_and_huge_arrays_are_refused_or_ignored(server: RunningServer, project: Project) -> None:
    def with_attribute(value_json: str) -> bytes:
        request = orjson.dumps(json_request([json_span("b" * 32, "c" * 16, {"session.id": "deep"})])).decode()
        return request.replace(
            '"value":{"stringValue":"deep"}}',
            '"value":{"stringValue":"deep"}},{"key":"gen_ai.input.messages","value":' + value_json + "}",
        ).encode()

    answer = post(server, project.token, with_attribute(_nested_json(120)))
    assert answer.status_code == 200 and answer.json() == {}  # read 16 levels deep: no messages, ignored
    too_deep = post(server, project.token, with_attribute(_nested_json(300)))
    assert too_deep.status_code == 400 and "not valid JSON" in too_deep.json()["detail"]  # orjson's depth limit
    # Protobuf nested past upb's recursion limit (100): its DecodeError, a 400 naming the message type.
    answer = post(server, project.token, _nested_protobuf(150), PROTOBUF)
    assert answer.status_code == 400 and b"ExportTraceServiceRequest" in answer.content
    # Within upb's limit (each level is three messages deep): read 16 levels deep, no messages, ignored.
    answer = post(server, project.token, _nested_protobuf(25), PROTOBUF)
    assert answer.status_code == 200 and not ExportTraceServiceResponse.FromString(answer.content).HasField(
        "partial_success"
    )
    # A huge array attribute that no convention reads costs nothing and is ignored.
    wide = json_span("f" * 32, "1" * 16, {"session.id": "wide", "gen_ai.input.messages": messages_json(("user", "hi"))})
    wide["attributes"].append({"key": "tags", "value": {"arrayValue": {"values": [{"intValue": "1"}] * 10_000}}})
    assert post(server, project.token, orjson.dumps(json_request([wide]))).status_code == 200
    assert conversation_ids(server, project) == ["wide"]


# -- /v1/logs: the per-message GenAI events of the conventions before 1.37 ----------------------------


def _log(trace: str, span: str, event: str, body: dict, at: int) -> dict:
    def value(v: object) -> dict:
        if isinstance(v, dict):
            return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
        return _value(v)

    return {
        "timeUnixNano": str(at),
        "traceId": trace,
        "spanId": span,
        "eventName": event,
        "attributes": [{"key": "gen_ai.system", "value": {"stringValue": "openai"}}],
        "body": value(body),
    }


def test_logs_json_with_per_message_events(server: RunningServer, project: Project) -> None:
    trace, span, at = "ab" * 16, "cd" * 8, 1_760_000_000 * 10**9
    records = [
        _log(trace, span, "gen_ai.system.message", {"content": "Be kind."}, at),
        _log(trace, span, "gen_ai.user.message", {"content": "Hi!"}, at),
        _log(
            trace,
            span,
            "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello."}},
            at + 10**9,
        ),
        {"timeUnixNano": str(at), "body": {"stringValue": "an ordinary log line, outside any span"}},
    ]
    body = {"resourceLogs": [{"resource": {}, "scopeLogs": [{"logRecords": records}]}]}
    for _ in range(2):  # a retry stores nothing twice
        answer = httpx.post(
            f"{server.base_url}/v1/logs",
            content=orjson.dumps(body),
            headers={"x-convolens-token": project.ingest_token, "Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json() == {}, answer.text
    assert transcript(server, project, trace) == [("system", "Be kind."), ("user", "Hi!"), ("assistant", "Hello.")]


def test_a_sliding_window_of_history_and_a_repeated_system_prompt_are_not_stored_twice(
    server: RunningServer, project: Project
) -> None:
    """An app that resends only its last messages (and its system prompt each time)."""
    said = [("user", "one"), ("assistant", "1"), ("user", "two"), ("assistant", "2"), ("user", "three")]
    spans = []
    for turn in range(3):
        history = [("system", "Count."), *said[max(0, 2 * turn - 2) : 2 * turn + 1]]
        reply = messages_json(("assistant", str(turn + 1)))
        attributes = {
            "session.id": "window",
            "gen_ai.input.messages": messages_json(*history),
            "gen_ai.output.messages": reply,
        }
        spans.append(json_span(f"{turn + 1:032x}", f"{turn + 1:016x}", attributes, start=1_760_000_000 + turn))
    for span in spans:  # one request each, as turns arrive
        assert post(server, project.token, orjson.dumps(json_request([span]))).status_code == 200
    expected = [("system", "Count."), *said, ("assistant", "3")]
    assert transcript(server, project, "window") == expected
    # The three again, in one request: nothing new.
    assert post(server, project.token, orjson.dumps(json_request(spans))).status_code == 200
    assert transcript(server, project, "window") == expected


def test_a_bad_token_header_is_refused_before_the_body_is_read(server: RunningServer, project: Project) -> None:
    bomb = gzip.compress(b"\0" * 30_000_000)  # ~30 KB that would inflate past the bound
    for headers in ({"x-convolens-token": "cl_" + "Q" * 43}, {}):
        answer = httpx.post(
            f"{server.base_url}/v1/traces",
            content=bomb,
            headers={**headers, "Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
            timeout=30,
        )
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    answer = httpx.post(
        f"{server.base_url}/v1/traces",
        content=bomb,
        headers={"x-convolens-token": project.ingest_token, "Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        timeout=30,
    )
    assert answer.status_code == 413  # a good token: then the body guard stops the inflation at its bound


def test_turns_of_a_session_arriving_late_or_at_once_are_stored_once(server: RunningServer, project: Project) -> None:
    """Exporters send spans as they end, several requests at a time: a session's second turn (which
    holds the first as history) may be stored before the first, or both at once."""
    from concurrent.futures import ThreadPoolExecutor

    def session_turns(session: str) -> list[bytes]:
        first = {"session.id": session, "gen_ai.input.messages": messages_json(("user", "Hi")),
                 "gen_ai.output.messages": messages_json(("assistant", "Hello."))}  # fmt: skip
        second = {"session.id": session,
                  "gen_ai.input.messages": messages_json(("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")),
                  "gen_ai.output.messages": messages_json(("assistant", "Goodbye."))}  # fmt: skip
        traces = [f"{session}{n}".encode().hex().ljust(32, "0")[:32] for n in (1, 2)]
        return [
            orjson.dumps(json_request([json_span(traces[0], "1" * 16, first, start=1_760_000_000)])),
            orjson.dumps(json_request([json_span(traces[1], "2" * 16, second, start=1_760_000_005)])),
        ]

    expected = [("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"), ("assistant", "Goodbye.")]
    first, second = session_turns("late")
    assert post(server, project.token, second).status_code == 200
    assert post(server, project.token, first).status_code == 200
    assert transcript(server, project, "late") == expected
    with ThreadPoolExecutor(8) as pool:
        sessions = [f"at-once-{n}" for n in range(8)]
        bodies = [body for session in sessions for body in session_turns(session)]
        assert {a.status_code for a in pool.map(lambda body: post(server, project.token, body), bodies)} == {200}
    assert {session: transcript(server, project, session) for session in sessions} == dict.fromkeys(sessions, expected)


# -- fuzzing: the conventions' keys with any values, any bytes as protobuf ------------------------------

_KEYS = [
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.conversation.id",
    "gen_ai.prompt.0.content", "gen_ai.prompt.0.role", "gen_ai.completion.0.content", "gen_ai.prompt.99999.role",
    "llm.input_messages.0.message.content", "llm.output_messages.0.message.role", "input.value", "output.value",
    "traceloop.entity.input", "traceloop.entity.output", "session.id", "user.id", "gen_ai.usage.input_tokens",
    "ai.prompt.messages", "ai.response.text", "ai.response.toolCalls", "openinference.span.kind",
]  # fmt: skip
_SCALARS = st.one_of(
    st.text(max_size=40).map(lambda t: {"stringValue": t}),
    st.sampled_from(
        ['[{"role":"user","parts":[{"type":"text","content":"x"}]}]', "[1,2]", '{"messages":[{}]}', "[{"]
    ).map(lambda t: {"stringValue": t}),
    st.integers(-(2**70), 2**70).map(lambda i: {"intValue": str(i)}),
    st.floats().map(lambda f: {"doubleValue": f if f == f and abs(f) != float("inf") else 0}),
    st.booleans().map(lambda b: {"boolValue": b}),
    st.just({"bytesValue": "AAEC"}),
    st.just({}),
    st.just(None),
    st.integers(-(2**63), 2**63 - 1),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda v: {"arrayValue": {"values": v}}),
        st.lists(st.tuples(st.sampled_from([*_KEYS, "role", "content", "parts", "type"]), inner), max_size=4).map(
            lambda kv: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kv]}}
        ),
    ),
    max_leaves=12,
)


@given(
    attributes=st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=8),
    ids=st.tuples(st.sampled_from(["ab" * 16, "", "zz", 5, None]), st.sampled_from(["cd" * 8, "", None])),
    times=st.tuples(st.sampled_from(["0", "1760000000000000000", "99999999999999999999", "-1", 3.5, None]), st.none()),
)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_attribute_values_get_a_200_or_a_clear_4xx(
    server: RunningServer, project: Project, attributes, ids, times
) -> None:
    span = {
        "traceId": ids[0],
        "spanId": ids[1],
        "startTimeUnixNano": times[0],
        "endTimeUnixNano": times[0],
        "attributes": [{"key": k, "value": v} for k, v in attributes],
        "status": {"code": 2},
    }
    answer = post(server, project.token, orjson.dumps(json_request([span])))
    assert answer.status_code in (200, 400), answer.text[:500]


@given(body=st.binary(max_size=300))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_bytes_as_protobuf_get_a_200_or_a_400(server: RunningServer, project: Project, body: bytes) -> None:
    for path in ("/v1/traces", "/v1/logs"):
        answer = httpx.post(
            f"{server.base_url}{path}",
            content=body,
            headers={"x-convolens-token": project.token, "Content-Type": PROTOBUF},
            timeout=30,
        )
        assert answer.status_code in (200, 400), answer.content[:300]


@given(text=st.lists(st.sampled_from("ab"), max_size=10), pattern=st.lists(st.sampled_from("ab"), max_size=10))
def test_history_overlap_is_the_longest_stored_suffix_that_starts_the_history(text: list, pattern: list) -> None:
    """``turns._overlap`` (linear, Knuth-Morris-Pratt) against the quadratic definition."""
    from convolens.otlp.turns import _overlap

    longest = next((j for j in range(min(len(text), len(pattern)), 0, -1) if text[-j:] == pattern[:j]), 0)
    whole = bool(pattern) and any(text[i : i + len(pattern)] == pattern for i in range(len(text) - len(pattern) + 1))
    assert _overlap(text, pattern) == (longest, whole)


def test_a_request_with_much_text_takes_the_heavy_lane_and_is_scrubbed(server: RunningServer, project: Project) -> None:
    """Over 64,000 characters of text: scrubbed in the heavy lane's child process, as a native batch is."""
    filler = "word " * 900
    spans = [
        json_span(
            f"{n + 1:032x}",
            f"{n + 1:016x}",
            {
                "session.id": f"heavy-{n}",
                "gen_ai.input.messages": messages_json(("user", f"{filler}call me on +44 20 7946 0{n:03d}")),
                "gen_ai.output.messages": messages_json(("assistant", "Noted.")),
            },
        )
        for n in range(16)
    ]
    answer = post(
        server, project.token, gzip.compress(orjson.dumps(json_request(spans))), **{"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 200 and answer.json() == {}, answer.text
    for n in (0, 15):
        [(_, question), reply] = transcript(server, project, f"heavy-{n}")
        assert question.startswith(filler) and "7946" not in question and reply == ("assistant", "Noted.")


def test_logs_over_a_bound_count_their_records_in_partial_success(server: RunningServer, project: Project) -> None:
    trace, at = "ef" * 16, 1_760_000_000 * 10**9
    big = "z" * (TEST_LIMITS.max_content_chars + 1)
    records = [
        _log(trace, "12" * 8, "gen_ai.user.message", {"content": big}, at),
        _log(trace, "12" * 8, "gen_ai.choice", {"index": 0, "message": {"role": "assistant", "content": "ok"}}, at),
    ]
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    answer = httpx.post(
        f"{server.base_url}/v1/logs",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {project.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "2" and "message 0 content" in partial["errorMessage"]
    assert conversation_ids(server, project) == []


_EVENT_NAMES = [
    "gen_ai.user.message", "gen_ai.system.message", "gen_ai.assistant.message", "gen_ai.tool.message",
    "gen_ai.choice", "gen_ai.client.inference.operation.details", "app.log",
]  # fmt: skip
_LOG_RECORDS = st.lists(
    st.fixed_dictionaries(
        {
            "traceId": st.sampled_from(["ab" * 16, "", None]),
            "spanId": st.sampled_from(["cd" * 8, "", None]),
            "eventName": st.sampled_from(_EVENT_NAMES),
            "timeUnixNano": st.sampled_from(["1760000000000000000", "0", "x", None]),
            "body": _VALUES,
            "attributes": st.lists(st.tuples(st.sampled_from([*_KEYS, "content"]), _VALUES), max_size=5).map(
                lambda kv: [{"key": k, "value": v} for k, v in kv]
            ),
        }
    ),
    max_size=5,
)


@given(records=_LOG_RECORDS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_genai_log_records_get_a_200_or_a_clear_4xx(server: RunningServer, project: Project, records) -> None:
    answer = httpx.post(
        f"{server.base_url}/v1/logs",
        content=orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}),
        headers={"x-convolens-token": project.token, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code in (200, 400), answer.text[:500]
