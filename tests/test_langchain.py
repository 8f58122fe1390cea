"""The LangChain handler with real LangChain runnables (fake models, no network) and a running server.

Each test asserts the exact transcripts that reach the server: roles, texts, and which conversation
each message landed in.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda

from conftest import RunningServer, make_project
from convolens import Client
from convolens.langchain import ContextCallbackHandler
from convolens.store import conversation_reads


class EchoChatModel(BaseChatModel):
    """A chat model that answers ``echo: <last user text>`` and fails on ``boom``: deterministic under concurrency."""

    headers: dict[str, str] | None = None

    @property
    def _llm_type(self) -> str:
        return "echo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "echo-1", "headers": self.headers}

    def _reply(self, messages: list[BaseMessage]) -> str:
        last = next(m for m in reversed(messages) if m.type == "human")
        if last.content == "boom":
            raise ValueError("the model exploded")
        return f"echo: {last.content}"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        message = AIMessage(
            self._reply(messages), usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        for word in self._reply(messages).split(" "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


@pytest.fixture
def setup(sqlite_server: RunningServer) -> Iterator[tuple[ContextCallbackHandler, Any]]:
    project = make_project(sqlite_server.db, "lc")
    client = Client(project.token, base_url=sqlite_server.base_url, spool=False, flush_interval=0.05)
    handler = ContextCallbackHandler(client=client)

    def transcripts() -> list[dict]:
        assert client.flush(30), client.stats
        with sqlite_server.db.reader() as conn:
            page = conversation_reads.list_conversations(
                conn, project.pk, start=datetime(2000, 1, 1), end=datetime(2100, 1, 1), per_page=10_000
            )
        return [
            {
                "id": c.id,
                "user_id": c.user_id,
                "tenant_id": c.tenant_id,
                "metadata": c.metadata,
                "messages": [(m.role, m.content) for m in c.messages],
                "raw": c.messages,
            }
            for c in sorted(page.items, key=lambda c: c.pk)
        ]

    yield handler, transcripts
    client.shutdown(5)


def only(transcripts) -> dict:
    found = transcripts()
    assert len(found) == 1, [t["messages"] for t in found]
    return found[0]


def test_chat_model_outside_a_chain(setup) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler], headers={"user_id": "header-user"})
    model.invoke([SystemMessage("You translate English to French."), HumanMessage("I love programming.")])
    got = only(transcripts)
    assert got["messages"] == [
        ("system", "You translate English to French."),
        ("user", "I love programming."),
        ("assistant", "echo: I love programming."),
    ]
    assert got["user_id"] == "header-user"
    reply = got["raw"][-1]
    assert (reply.model, reply.input_tokens, reply.output_tokens) == ("echo-1", 7, 3)
    assert reply.latency_ms is not None and reply.latency_ms >= 0
    assert got["metadata"]["model"] == "echo-1"


def test_lcel_chain_with_the_handler_on_model_and_chain_is_one_conversation(setup) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler])
    chain = (
        ChatPromptTemplate.from_messages([("system", "Answer in {lang}"), ("human", "{text}")])
        | model
        | StrOutputParser()
    )
    out = chain.invoke(
        {"lang": "French", "text": "hello"},
        config={"callbacks": [handler], "metadata": {"user_id": "u1", "tenant_id": "acme"}},
    )
    assert out == "echo: hello"
    got = only(transcripts)
    assert got["messages"] == [("user", "hello"), ("assistant", "echo: hello")]
    assert (got["user_id"], got["tenant_id"]) == ("u1", "acme")
    assert got["raw"][0].extra == {"inputs": {"lang": "French"}}
    assert got["raw"][1].model == "echo-1" and got["raw"][1].output_tokens == 3


@pytest.mark.parametrize(
    "tail,expected",
    [
        (None, "echo: hi"),  # AIMessage output
        (StrOutputParser(), "echo: hi"),  # str output
        (RunnableLambda(lambda m: {"answer": m.content, "sources": ["a"]}), "echo: hi"),  # dict output
    ],
)
def test_lcel_output_kinds(setup, tail, expected) -> None:
    handler, transcripts = setup
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | EchoChatModel()
    if tail is not None:
        chain = chain | tail
    chain.invoke({"question": "hi"}, config={"callbacks": [handler]})
    assert only(transcripts)["messages"] == [("user", "hi"), ("assistant", expected)]


def test_legacy_llmchain(setup) -> None:
    from langchain_classic.chains import LLMChain

    handler, transcripts = setup
    chat = FakeListChatModel(responses=["J'adore programmer."], callbacks=[handler])
    prompt = PromptTemplate.from_template("Translate to French: {text}")
    # The seed's example uses the deprecated LLMChain on purpose: the handler must keep working for it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        chain = LLMChain(llm=chat, prompt=prompt, callbacks=[handler])
    chain.invoke({"text": "I love programming."})
    assert only(transcripts)["messages"] == [("user", "I love programming."), ("assistant", "J'adore programmer.")]


def test_nested_chains_record_only_the_outermost(setup) -> None:
    handler, transcripts = setup
    inner = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()
    outer = RunnableLambda(lambda text: {"q": text.upper()}) | inner | RunnableLambda(lambda s: s + "!")
    assert outer.invoke("hi", config={"callbacks": [handler]}) == "echo: HI!"
    assert only(transcripts)["messages"] == [("user", "hi"), ("assistant", "echo: HI!")]


def test_batch_gives_one_conversation_per_input(setup) -> None:
    handler, transcripts = setup
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()
    chain.batch([{"q": f"question {i}"} for i in range(5)], config={"callbacks": [handler]})
    got = sorted(t["messages"] for t in transcripts())
    assert got == sorted([[("user", f"question {i}"), ("assistant", f"echo: question {i}")] for i in range(5)])


def test_chat_model_batch(setup) -> None:
    handler, transcripts = setup
    EchoChatModel(callbacks=[handler]).batch([[HumanMessage("a")], [HumanMessage("b")]])
    assert sorted(t["messages"] for t in transcripts()) == [
        [("user", "a"), ("assistant", "echo: a")],
        [("user", "b"), ("assistant", "echo: b")],
    ]


def test_stream_and_astream(setup) -> None:
    handler, transcripts = setup
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()
    streamed = "".join(chain.stream({"q": "one two"}, config={"callbacks": [handler]}))

    async def collect() -> str:
        return "".join([c async for c in chain.astream({"q": "three"}, config={"callbacks": [handler]})])

    astreamed = asyncio.run(collect())
    model_streamed = "".join(c.content for c in EchoChatModel(callbacks=[handler]).stream([HumanMessage("four")]))
    got = [t["messages"] for t in transcripts()]
    assert got == [
        [("user", "one two"), ("assistant", streamed)],
        [("user", "three"), ("assistant", astreamed)],
        [("user", "four"), ("assistant", model_streamed)],
    ]
    assert streamed.strip() == "echo: one two"


def test_500_concurrent_ainvoke_tasks(setup) -> None:
    handler, transcripts = setup
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()

    async def run_all() -> None:
        await asyncio.gather(
            *[
                chain.ainvoke({"q": f"task {i}"}, config={"callbacks": [handler], "metadata": {"user_id": f"u{i}"}})
                for i in range(500)
            ]
        )

    asyncio.run(run_all())
    got = transcripts()
    assert len(got) == 500
    for t in got:
        number = t["user_id"][1:]
        assert t["messages"] == [("user", f"task {number}"), ("assistant", f"echo: task {number}")]
    assert {t["user_id"] for t in got} == {f"u{i}" for i in range(500)}


def test_200_threads_share_one_handler(setup) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler])
    chain = ChatPromptTemplate.from_messages([("system", "sys"), ("human", "{q}")]) | model | StrOutputParser()

    def work(i: int) -> None:
        if i % 2:
            model.invoke([SystemMessage("sys"), HumanMessage(f"direct {i}")], config={"metadata": {"user_id": f"u{i}"}})
        else:
            chain.invoke({"q": f"chain {i}"}, config={"callbacks": [handler], "metadata": {"user_id": f"u{i}"}})

    with ThreadPoolExecutor(200) as pool:
        list(pool.map(work, range(200)))
    got = transcripts()
    assert len(got) == 200
    for t in got:
        i = int(t["user_id"][1:])
        if i % 2:
            assert t["messages"] == [("system", "sys"), ("user", f"direct {i}"), ("assistant", f"echo: direct {i}")]
        else:
            assert t["messages"] == [("user", f"chain {i}"), ("assistant", f"echo: chain {i}")]


def test_errors_record_the_failed_turn_and_leak_nothing(setup) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler])
    with pytest.raises(ValueError):
        model.invoke([HumanMessage("boom")])
    model.invoke([HumanMessage("fine")])
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()
    with pytest.raises(ValueError):
        chain.invoke({"q": "boom"}, config={"callbacks": [handler]})
    chain.invoke({"q": "after"}, config={"callbacks": [handler]})
    got = transcripts()
    assert [t["messages"] for t in got] == [
        [("user", "boom"), ("assistant", "")],
        [("user", "fine"), ("assistant", "echo: fine")],
        [("user", "boom"), ("assistant", "")],
        [("user", "after"), ("assistant", "echo: after")],
    ]
    assert got[0]["raw"][-1].error == "ValueError: the model exploded"
    assert got[2]["raw"][-1].error == "ValueError: the model exploded"
    assert got[1]["raw"][-1].error is None and got[3]["raw"][-1].error is None


def test_tool_calls_and_tool_messages(setup) -> None:
    handler, transcripts = setup
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
    model = FakeMessagesListChatModel(
        responses=[AIMessage("", tool_calls=[call]), AIMessage("It is sunny.")], callbacks=[handler]
    )
    first = model.invoke([HumanMessage("Weather in Paris?")])
    model.invoke(
        [HumanMessage("Weather in Paris?"), first, ToolMessage("sunny, 21C", tool_call_id="call_1", name="get_weather")]
    )
    got = transcripts()
    assert got[0]["messages"] == [("user", "Weather in Paris?"), ("assistant", "")]
    assert got[0]["raw"][1].extra == {
        "tool_calls": [{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]
    }
    assert got[1]["messages"] == [
        ("user", "Weather in Paris?"),
        ("assistant", ""),
        ("tool", "sunny, 21C"),
        ("assistant", "It is sunny."),
    ]
    tool = got[1]["raw"][2]
    assert tool.name == "get_weather" and tool.extra == {"tool_call_id": "call_1"}


def test_multimodal_content_keeps_text_and_summarises_the_rest(setup) -> None:
    handler, transcripts = setup
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}}
    EchoChatModel(callbacks=[handler]).invoke(
        [HumanMessage(content=[{"type": "text", "text": "What is this?"}, image])]
    )
    got = only(transcripts)
    assert got["messages"][0] == ("user", "What is this?\n[image_url]")
    assert got["raw"][0].extra == {"multimodal": True}


def test_completion_style_llm(setup) -> None:
    handler, transcripts = setup
    FakeListLLM(responses=["Paris."], callbacks=[handler]).invoke("The capital of France is")
    assert only(transcripts)["messages"] == [("user", "The capital of France is"), ("assistant", "Paris.")]


def test_thread_id_appends_turns_without_repeating_history(setup) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler])
    history: list[BaseMessage] = [SystemMessage("sys")]
    for text in ("first", "second", "third"):  # an app that resends the whole history
        history.append(HumanMessage(text))
        history.append(model.invoke(history, config={"metadata": {"thread_id": "t-full", "user_id": "u"}}))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | EchoChatModel() | StrOutputParser()
    for text in ("yes", "yes"):  # an app that sends only the new turn, twice the same words
        chain.invoke({"q": text}, config={"callbacks": [handler], "metadata": {"session_id": "t-new"}})
    by_id = {t["id"]: t["messages"] for t in transcripts()}
    assert by_id["t-full"] == [
        ("system", "sys"),
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
        ("assistant", "echo: second"),
        ("user", "third"),
        ("assistant", "echo: third"),
    ]
    assert by_id["t-new"] == [("user", "yes"), ("assistant", "echo: yes")] * 2


def test_a_restarted_app_resending_history_does_not_duplicate(setup, sqlite_server: RunningServer) -> None:
    handler, transcripts = setup
    model = EchoChatModel(callbacks=[handler])
    history = [HumanMessage("q1")]
    history.append(model.invoke(history, config={"metadata": {"conversation_id": "t-restart"}}))
    # A new handler (a restarted process) knows nothing of the thread, and resends it all.
    fresh = ContextCallbackHandler(client=handler.client)
    history.append(HumanMessage("q2"))
    EchoChatModel(callbacks=[fresh]).invoke(history, config={"metadata": {"conversation_id": "t-restart"}})
    assert only(transcripts)["messages"] == [
        ("user", "q1"),
        ("assistant", "echo: q1"),
        ("user", "q2"),
        ("assistant", "echo: q2"),
    ]


def test_handler_constructor_compatibility(monkeypatch) -> None:
    monkeypatch.setenv("CONTEXT_TOKEN", "cl_from_env")
    assert ContextCallbackHandler(spool=False).client.token == "cl_from_env"
    assert ContextCallbackHandler("cl_positional", spool=False).client.token == "cl_positional"
    handler = ContextCallbackHandler(
        "cl_x", base_url="http://127.0.0.1:9", user_id="u", conversation_id="c", metadata={"app": "x"}, spool=False
    )
    assert handler.run_inline is True and isinstance(handler, BaseCallbackHandler)
    assert (handler.user_id, handler.conversation_id, handler.metadata) == ("u", "c", {"app": "x"})
