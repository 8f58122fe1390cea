"""Real OpenTelemetry producers → ``/v1/traces`` and ``/v1/logs`` → the transcript read back, whole.

Each producer runs in a child process configured only as the README tells an app to be: the exporter
endpoint and token from ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_HEADERS`` and the
instrumentation's own content-capture variable (instrumentations patch client libraries process-wide
and read their settings once, so a process each keeps them apart). The LLM is tests/openai_stub.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import REPO, Project, RunningServer
from openai_stub import openai_stub
from test_otlp import conversation, conversation_ids, transcript

_EXPORT_SETUP = """
import os
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
tracer = tracer_provider.get_tracer("the-app")
"""

_EXPORT_END = """
tracer_provider.shutdown()
logger_provider.shutdown()
"""


def run_producer(server: RunningServer, project: Project, body: str, env: dict[str, str], stub_url: str = "") -> None:
    script = _EXPORT_SETUP + textwrap.dedent(body) + _EXPORT_END
    child_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACELOOP_"))},
        "PYTHONPATH": str(REPO / "src"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": server.base_url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-convolens-token={project.ingest_token}",
        "STUB_URL": stub_url,
        "NO_PROXY": "127.0.0.1",
        **env,
    }
    done = subprocess.run([sys.executable, "-c", script], env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Failed to export" not in done.stderr, done.stderr[-3000:]


def _answers(_topic: str, text: str) -> str:
    return {"Weather in Oslo?": "Rainy, 4 degrees.", "And tomorrow?": "Sunny, 9 degrees."}.get(text, f"? {text}")


_TWO_OPENAI_CALLS = """
import openai
client = openai.OpenAI(base_url=os.environ["STUB_URL"], api_key="sk-test", max_retries=0)
messages = [{"role": "system", "content": "You are a weather bot."}, {"role": "user", "content": "Weather in Oslo?"}]
for question in ("And tomorrow?", None):
    with tracer.start_as_current_span("handle message") as turn:
        turn.set_attribute(SESSION_KEY, "weather-chat")
        turn.set_attribute("user.id", "u-oslo")
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    if question:
        messages.append({"role": "user", "content": question})
"""

WEATHER_CHAT = [
    ("system", "You are a weather bot."),
    ("user", "Weather in Oslo?"),
    ("assistant", "Rainy, 4 degrees."),
    ("user", "And tomorrow?"),
    ("assistant", "Sunny, 9 degrees."),
]


def test_opentelemetry_instrumentation_openai_v2_spans(server: RunningServer, project: Project) -> None:
    """The official instrumentation on the latest GenAI conventions: gen_ai.input.messages and
    gen_ai.output.messages on the chat span (``span_only``)."""
    body = (
        textwrap.dedent("""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
    SESSION_KEY = "session.id"
    """)
        + _TWO_OPENAI_CALLS
    )
    env = {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
    }
    with openai_stub(_answers) as (url, requests):
        run_producer(server, project, body, env, url)
    assert len(requests) == 2
    stored = conversation(server, project, "weather-chat")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == WEATHER_CHAT
    assert stored["user_id"] == "u-oslo"
    assert {m.get("model") for m in stored["messages"] if m["role"] == "assistant"} == {"gpt-4o-mini"}


def test_opentelemetry_instrumentation_openai_v2_log_events(server: RunningServer, project: Project) -> None:
    """The same instrumentation with content in events only (``event_only``): a
    gen_ai.client.inference.operation.details log record with structured (not JSON text) messages →
    /v1/logs. Log records carry no session, so each trace is a conversation; the second holds the whole chat."""
    body = (
        textwrap.dedent("""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
    SESSION_KEY = "session.id"
    """)
        + _TWO_OPENAI_CALLS
    )
    with openai_stub(_answers) as (url, _):
        env = {
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "event_only",
        }
        run_producer(server, project, body, env, url)
    ids = conversation_ids(server, project)
    assert len(ids) == 2 and "weather-chat" not in ids
    transcripts = sorted((transcript(server, project, i) for i in ids), key=len)
    assert transcripts == [WEATHER_CHAT[:3], WEATHER_CHAT]


def test_openllmetry_openai_instrumentation(server: RunningServer, project: Project) -> None:
    """OpenLLMetry's OpenAI instrumentation (content on by default, TRACELOOP_TRACE_CONTENT), the
    session as an association property on the app's span, as Traceloop's SDK sets it."""
    body = (
        textwrap.dedent("""
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider)
    SESSION_KEY = "traceloop.association.properties.session_id"
    """)
        + _TWO_OPENAI_CALLS
    )
    with openai_stub(_answers) as (url, _):
        run_producer(server, project, body, {"TRACELOOP_TRACE_CONTENT": "true"}, url)
    assert transcript(server, project, "weather-chat") == WEATHER_CHAT


def test_openinference_langchain_fake_chat_model(server: RunningServer, project: Project) -> None:
    """OpenInference's LangChain instrumentation: a prompt | model chain (CHAIN and LLM spans), then the
    model alone with the history; the session and user from OpenInference's context attributes."""
    body = """
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage
    from langchain_core.prompts import ChatPromptTemplate
    from openinference.instrumentation import using_session, using_user
    from openinference.instrumentation.langchain import LangChainInstrumentor

    LangChainInstrumentor().instrument(tracer_provider=tracer_provider)
    model = FakeListChatModel(responses=["Paris.", "About 2.1 million."])
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    with using_session("lc-session"), using_user("lc-user"):
        first = (prompt | model).invoke({"question": "Capital of France?"})
        history = prompt.invoke({"question": "Capital of France?"}).to_messages()
        model.invoke([*history, first, HumanMessage("Population?")])
    """
    run_producer(server, project, body, {})
    stored = conversation(server, project, "lc-session")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == [
        ("system", "Answer briefly."),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Population?"),
        ("assistant", "About 2.1 million."),
    ]
    assert stored["user_id"] == "lc-user"


def test_the_readme_quick_start_environment(server: RunningServer, project: Project) -> None:
    """A hand-made GenAI span sent by the SDK's exporter configured by environment alone, the token in
    Authorization this time (percent-encoded space, as OTEL_EXPORTER_OTLP_HEADERS needs)."""
    body = """
    import json
    def said(role, text):
        return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
    with tracer.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.conversation.id", "readme")
        span.set_attribute("gen_ai.input.messages", said("user", "Hi"))
        span.set_attribute("gen_ai.output.messages", said("assistant", "Hello!"))
    """
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{project.ingest_token}"}
    run_producer(server, project, body, env)
    assert transcript(server, project, "readme") == [("user", "Hi"), ("assistant", "Hello!")]


def test_pydantic_ai_instrumentation(server: RunningServer, project: Project) -> None:
    """Pydantic AI's own instrumentation (GenAI conventions, content on by default) around its OpenAI
    model on the stub: an agent with a system prompt, then a second run with the message history. Its
    agent run span holds the whole history too; the chat span, a model call, is the turn."""
    body = """
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=os.environ["STUB_URL"], api_key="sk-test"))
    Agent.instrument_all(InstrumentationSettings(tracer_provider=tracer_provider))
    agent = Agent(model, system_prompt="You are a weather bot.")
    first = agent.run_sync("Weather in Oslo?", conversation_id="weather-chat")  # gen_ai.conversation.id
    agent.run_sync("And tomorrow?", message_history=first.all_messages())  # the same id, from the history
    """
    with openai_stub(_answers) as (url, requests):
        run_producer(server, project, body, {}, url)
    assert len(requests) == 2
    assert transcript(server, project, "weather-chat") == WEATHER_CHAT


NODE_APP = REPO / "tests" / "node"


def test_vercel_ai_sdk_telemetry_from_node(server: RunningServer, project: Project) -> None:
    """A Node.js app on the Vercel AI SDK (``ai`` + ``@ai-sdk/openai``) with its telemetry on, exported by
    ``@opentelemetry/exporter-trace-otlp-proto``; installed from tests/node's package.json and lockfile."""
    if not (NODE_APP / "node_modules" / "ai").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_APP, check=True, timeout=600)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_EXPORTER_OTLP_ENDPOINT": server.base_url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-convolens-token={project.ingest_token}",
        "NO_PROXY": "127.0.0.1",
    }
    with openai_stub(_answers) as (url, requests):
        done = subprocess.run(
            ["node", "vercel_chat.mjs"],
            cwd=NODE_APP,
            env={**env, "STUB_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(requests) == 2
    stored = conversation(server, project, "weather-chat")
    assert [(m["role"], m["message"]) for m in stored["messages"]] == WEATHER_CHAT
    assert stored["user_id"] == "u-oslo" and stored["messages"][-1]["model"] == "gpt-4o-mini"
