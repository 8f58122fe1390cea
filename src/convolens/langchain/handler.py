"""``ContextCallbackHandler``: LangChain's Context handler, rebuilt on the convolens SDK without its defects.

What becomes a conversation:
- a chat model or LLM run that is the outermost run this handler sees: its prompt messages and its reply;
- a chain run that is the outermost run this handler sees: the chain's starting input and its final
  output, never its intermediate steps or inner model calls (those only lend their model name, token
  usage and ``user_id`` header to the outer conversation).

State lives per run id, never per handler, so concurrent, nested and batched runs never mix; a failed
run records the failed turn (with the error) and leaves nothing behind. The handler runs inline and only
enqueues: the network is the SDK's background thread's business.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from convolens.langchain.messages import content_text, from_input, from_message, from_output
from convolens.sdk import events as ev
from convolens.sdk.client import Client
from convolens.sdk.sender import iso_timestamp

log = logging.getLogger("convolens.langchain")

THREAD_KEYS = ("conversation_id", "thread_id", "session_id")
# Metadata keys that configure the transcript rather than describe it.
_CONSUMED_KEYS = frozenset({"user_id", "tenant_id", *THREAD_KEYS})
_MAX_THREADS_REMEMBERED = 10_000


@dataclass(slots=True)
class _Run:
    kind: str  # "chat", "llm" or "chain"
    started: float
    metadata: Mapping[str, Any] | None
    prompt: Any  # chat: list of messages; llm: str; chain: the inputs
    params: Mapping[str, Any] | None = None  # the model's invocation params (a chain: its first model's)
    model_metadata: Mapping[str, Any] | None = None
    # (input tokens, output tokens, model) of the model's result, or of a chain's inner models' results;
    # taken at once so that no LLMResult is kept alive until the sender gets to the run.
    usage: list[tuple[int | None, int | None, str | None]] | None = None
    reply: Any = None  # a model run's generation (message or text)


_NO_OUTPUT = object()


class _ThreadHistories:
    """What this process already sent of each thread, so that resent history is not appended twice.

    Apps either resend the whole history each turn (then what we know is a prefix of the transcript and
    only the rest is new) or send only the new turn (then it is appended). Message ids are derived from
    (thread, position, role, text), so even after a restart a resent history is deduplicated by the server.
    """

    def __init__(self, max_threads: int = _MAX_THREADS_REMEMBERED) -> None:
        self._known: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_threads

    def new_part(self, thread: str, transcript: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        prints = [hash((m["role"], m["content"])) for m in transcript]
        with self._lock:
            known = self._known.pop(thread, [])
            # A strictly longer transcript that starts with what we sent is a resent history; an equal
            # one is the same turn said again (the user typed "yes" twice).
            if known and len(prints) > len(known) and prints[: len(known)] == known:
                start, new = len(known), transcript[len(known) :]
                self._known[thread] = prints
            else:
                start, new = len(known), transcript
                self._known[thread] = known + prints
            while len(self._known) > self._max:
                self._known.popitem(last=False)
        return start, new


def _message_id(thread: str, position: int, message: Mapping[str, Any]) -> str:
    key = f"{thread}\x00{position}\x00{message['role']}\x00{message['content']}"
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _model_from(params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None) -> str | None:
    if params:
        for key in ("model", "model_name", "model_id", "deployment_name"):
            value = params.get(key)
            if isinstance(value, str) and value:
                return value
    if metadata:
        value = metadata.get("ls_model_name")
        if isinstance(value, str) and value:
            return value
    return None


def _header_user(params: Mapping[str, Any] | None) -> str | None:
    """``user_id`` from ``ChatOpenAI(headers={"user_id": …})`` and friends, as in the seed's example."""
    if not params:
        return None
    if (
        "headers" not in params
        and "default_headers" not in params
        and "extra_headers" not in params
        and "model_kwargs" not in params
    ):
        return None
    for holder in (params, params.get("model_kwargs") or {}):
        for key in ("headers", "default_headers", "extra_headers"):
            headers = holder.get(key) if isinstance(holder, Mapping) else None
            if isinstance(headers, Mapping) and headers.get("user_id") is not None:
                return str(headers["user_id"])
    return None


def _usage(response: Any) -> tuple[int | None, int | None, str | None]:
    """(input tokens, output tokens, model name) from an ``LLMResult``, wherever the provider put them."""
    inputs = outputs = None
    model = None
    llm_output = getattr(response, "llm_output", None) or {}
    usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
    if usage:
        inputs = usage.get("prompt_tokens", usage.get("input_tokens"))
        outputs = usage.get("completion_tokens", usage.get("output_tokens"))
    model = llm_output.get("model_name") or llm_output.get("model")
    generations = getattr(response, "generations", None) or []
    if generations and generations[0]:
        message = getattr(generations[0][0], "message", None)
        usage_metadata = getattr(message, "usage_metadata", None)
        if usage_metadata:
            inputs = usage_metadata.get("input_tokens", inputs)
            outputs = usage_metadata.get("output_tokens", outputs)
        response_metadata = getattr(message, "response_metadata", None) or {}
        model = model or response_metadata.get("model_name") or response_metadata.get("model")
    return inputs, outputs, model


class ContextCallbackHandler(BaseCallbackHandler):
    """Record LangChain conversations in convolens.

    >>> handler = ContextCallbackHandler("cl_…", base_url="https://analytics.example.com")
    >>> chat = ChatOpenAI(callbacks=[handler])
    >>> chain.invoke(x, config={"callbacks": [handler], "metadata": {"user_id": "u1"}})
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        client: Client | None = None,
        verbose: bool = False,
        **client_options: Any,
    ) -> None:
        super().__init__()
        self.client = client or Client(token, base_url=base_url, **client_options)
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.metadata = dict(metadata or {})
        self.verbose = verbose
        self._runs: dict[int, _Run] = {}
        self._root_of: dict[int, int] = {}
        self._threads = _ThreadHistories()

    # -- run bookkeeping ----------------------------------------------------------------------------
    # Runs are keyed by ``run_id.int``: hashing a UUID runs Python code, hashing an int does not, and
    # every callback does a few look-ups.
    def _root(self, parent_run_id: UUID | None) -> int | None:
        if parent_run_id is None:
            return None
        key = parent_run_id.int
        if key in self._runs:
            return key
        return self._root_of.get(key)

    def _adopt(self, run_id: UUID, parent_run_id: UUID | None) -> _Run | None:
        """If the run is inside one we record, remember it as a child and return that outer run.

        A child's entry goes when the child ends or fails (LangChain always reports one or the other).
        """
        root = self._root(parent_run_id)
        if root is None:
            return None
        outer = self._runs.get(root)
        if outer is not None:
            self._root_of[run_id.int] = root
        return outer

    def _finish(self, run_id: UUID) -> _Run | None:
        return self._runs.pop(run_id.int, None)

    # -- chat models and LLMs ---------------------------------------------------------------------
    # The callbacks only keep references and enqueue; the transcript is built by ``_build`` on the
    # SDK's sender thread, so the app's thread pays for a few dict operations and an append.
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start("chat", messages[0] if messages else [], run_id, parent_run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start("llm", prompts[0] if prompts else "", run_id, parent_run_id, metadata, kwargs)

    def _model_start(
        self,
        kind: str,
        prompt: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        params = kwargs.get("invocation_params")
        outer = self._adopt(run_id, parent_run_id)
        if outer is not None:
            if outer.params is None:
                outer.params, outer.model_metadata = params, metadata
            return
        self._runs[run_id.int] = _Run(kind, time.perf_counter(), metadata, prompt, params, metadata)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        root = self._root_of.pop(run_id.int, None)
        if root is not None:
            outer = self._runs.get(root)
            if outer is not None:
                if outer.usage is None:
                    outer.usage = [_usage(response)]
                else:
                    outer.usage.append(_usage(response))
            return
        run = self._finish(run_id)
        if run is not None:
            run.usage = [_usage(response)]
            run.reply = _generation(response)
            self._record(run, _NO_OUTPUT, None, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if self._root_of.pop(run_id.int, None) is not None:
            return  # the enclosing chain reports the failure if it does not recover
        run = self._finish(run_id)
        if run is not None:
            self._record(run, _NO_OUTPUT, None, error)

    # -- chains, tools, retrievers ----------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._adopt(run_id, parent_run_id) is not None:
            return
        self._runs[run_id.int] = _Run("chain", time.perf_counter(), metadata, inputs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        if self._root_of.pop(run_id.int, None) is not None:
            return
        run = self._finish(run_id)
        if run is not None:
            # A streamed chain starts with a placeholder input; the real one comes with its end.
            self._record(run, outputs, inputs, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        if self._root_of.pop(run_id.int, None) is not None:
            return
        run = self._finish(run_id)
        if run is not None:
            self._record(run, _NO_OUTPUT, inputs, error)

    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._adopt(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._adopt(run_id, parent_run_id)

    def _child_done(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self._root_of.pop(run_id.int, None)

    on_tool_end = on_tool_error = on_retriever_end = on_retriever_error = _child_done

    # -- the transcript ---------------------------------------------------------------------------
    def _record(self, run: _Run, outputs: Any, inputs: Any, error: BaseException | None) -> None:
        """Hand the finished run to the sender thread; called on the app's thread, so kept tiny."""
        latency_ms = (time.perf_counter() - run.started) * 1000
        at = ev.now()
        if inputs is not None:
            run.prompt = inputs
        self.client.put_deferred(_estimate(run), partial(self._build, run, outputs, error, latency_ms, at))

    def _build(
        self, run: _Run, outputs: Any, error: BaseException | None, latency_ms: float, at: float
    ) -> list[dict[str, Any]]:
        if run.kind == "chat":
            prompt = [from_message(m) for m in run.prompt]
        elif run.kind == "llm":
            prompt = [{"role": "user", "content": content_text(run.prompt)}]
        else:
            prompt = from_input(run.prompt)
        if error is not None:
            reply: dict[str, Any] = {
                "role": "assistant",
                "content": "",
                "error": f"{type(error).__name__}: {error}"[:4000],
            }
        elif outputs is not _NO_OUTPUT:
            reply = from_output(outputs)
        else:
            reply = _reply_from(run.reply)

        model = _model_from(run.params, run.model_metadata)
        input_tokens = output_tokens = None
        for inputs, outputs_, reported_model in run.usage or ():
            model = model or reported_model
            if inputs is not None:
                input_tokens = (input_tokens or 0) + inputs
            if outputs_ is not None:
                output_tokens = (output_tokens or 0) + outputs_

        metadata = run.metadata or {}
        user_id = metadata.get("user_id") or _header_user(run.params) or self.user_id
        tenant_id = metadata.get("tenant_id")
        thread = next((metadata[k] for k in THREAD_KEYS if metadata.get(k)), None) or self.conversation_id
        conversation_metadata = dict(self.metadata)
        for key, value in metadata.items():
            if key not in _CONSUMED_KEYS and not key.startswith(("ls_", "lc_", "langgraph_", "checkpoint_")):
                conversation_metadata[key] = value
        if model:
            conversation_metadata.setdefault("model", model)
        reply["latency_ms"] = latency_ms
        if model:
            reply["model"] = model
        if input_tokens is not None:
            reply["input_tokens"] = input_tokens
        if output_tokens is not None:
            reply["output_tokens"] = output_tokens
        transcript = [*prompt, reply]

        if thread is not None:
            conversation_id = str(thread)
            start, transcript = self._threads.new_part(conversation_id, transcript)
            ids = [_message_id(conversation_id, start + i, m) for i, m in enumerate(transcript)]
        else:
            conversation_id = ev.new_id()
            ids = [ev.new_id() for _ in transcript]
        counters = self.client._counters
        at = iso_timestamp(at)  # formatted once for all the run's messages
        batch = [
            ev.conversation_event(
                conversation_id,
                user_id=_str_or_none(user_id),
                tenant_id=_str_or_none(tenant_id),
                metadata=conversation_metadata,
            )
        ]
        for message_id, message in zip(ids, transcript, strict=True):
            fields = {k: v for k, v in message.items() if k not in ("role", "content")}
            batch.append(
                ev.message_event(
                    conversation_id,
                    message["role"],
                    message["content"],
                    counters,
                    id=message_id,
                    timestamp=at,
                    **fields,
                )
            )
        return batch

    # -- convenience ------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        return self.client.shutdown(timeout)


def _generation(response: Any) -> Any:
    generations = getattr(response, "generations", None)
    return generations[0][0] if generations and generations[0] else None


def _reply_from(generation: Any) -> dict[str, Any]:
    if generation is None:
        return {"role": "assistant", "content": ""}
    message = getattr(generation, "message", None)
    if message is not None:
        reply = from_message(message)
        reply["role"] = "assistant"
        return reply
    return {"role": "assistant", "content": getattr(generation, "text", "") or ""}


def _estimate(run: _Run) -> int:
    """How many events a run becomes (a conversation event, the prompt, the reply), cheaply.

    Usually exact; the sender settles the difference when a chain's input holds more messages.
    """
    prompt = run.prompt
    if run.kind == "chat":
        return len(prompt) + 2
    if run.kind == "chain" and type(prompt) is dict and type(prompt.get("messages")) is list:
        return len(prompt["messages"]) + 2
    return 3


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
