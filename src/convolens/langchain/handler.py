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
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from convolens.langchain.messages import content_text, from_input, from_message, from_output
from convolens.sdk import events as ev
from convolens.sdk.client import Client

log = logging.getLogger("convolens.langchain")

THREAD_KEYS = ("conversation_id", "thread_id", "session_id")
# Metadata keys that configure the transcript rather than describe it.
_CONSUMED_KEYS = frozenset({"user_id", "tenant_id", *THREAD_KEYS})
_MAX_THREADS_REMEMBERED = 10_000


@dataclass
class _Run:
    kind: str  # "chat", "llm" or "chain"
    started: float
    metadata: Mapping[str, Any] | None
    prompt: Any = None  # chat: list of messages; llm: str; chain: the inputs
    model: str | None = None
    header_user_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    children: list[UUID] = field(default_factory=list)


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
        self._runs: dict[UUID, _Run] = {}
        self._root_of: dict[UUID, UUID] = {}
        self._threads = _ThreadHistories()

    # -- run bookkeeping ----------------------------------------------------------------------------
    def _root(self, parent_run_id: UUID | None) -> UUID | None:
        if parent_run_id is None:
            return None
        if parent_run_id in self._runs:
            return parent_run_id
        return self._root_of.get(parent_run_id)

    def _adopt(self, run_id: UUID, parent_run_id: UUID | None) -> _Run | None:
        """If the run is inside one we record, remember it as a child and return that outer run."""
        root = self._root(parent_run_id)
        if root is None:
            return None
        outer = self._runs.get(root)
        if outer is None:
            return None
        self._root_of[run_id] = root
        outer.children.append(run_id)
        return outer

    def _finish(self, run_id: UUID) -> _Run | None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            for child in run.children:
                self._root_of.pop(child, None)
        return run

    # -- chat models and LLMs ---------------------------------------------------------------------
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
            outer.model = outer.model or _model_from(params, metadata)
            outer.header_user_id = outer.header_user_id or _header_user(params)
            return
        self._runs[run_id] = _Run(
            kind=kind,
            started=time.perf_counter(),
            metadata=metadata,
            prompt=prompt,
            model=_model_from(params, metadata),
            header_user_id=_header_user(params),
        )

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        try:
            root = self._root_of.get(run_id)
            if root is not None:
                outer = self._runs.get(root)
                if outer is not None:
                    inputs, outputs, model = _usage(response)
                    outer.model = outer.model or model
                    outer.input_tokens = (outer.input_tokens or 0) + (inputs or 0) if inputs else outer.input_tokens
                    outer.output_tokens = (
                        (outer.output_tokens or 0) + (outputs or 0) if outputs else outer.output_tokens
                    )
                return
            run = self._finish(run_id)
            if run is None:
                return
            inputs, outputs, model = _usage(response)
            run.model = run.model or model
            run.input_tokens, run.output_tokens = inputs, outputs
            reply = self._reply_from(response)
            self._emit(run, self._prompt_messages(run), reply)
        except Exception:
            log.exception("convolens: could not record an LLM run")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._root_of.pop(run_id, None) is not None:
                return  # the enclosing chain reports the failure if it does not recover
            run = self._finish(run_id)
            if run is not None:
                self._emit(run, self._prompt_messages(run), self._error_reply(error))
        except Exception:
            log.exception("convolens: could not record a failed LLM run")

    @staticmethod
    def _prompt_messages(run: _Run) -> list[dict[str, Any]]:
        if run.kind == "chat":
            return [from_message(m) for m in run.prompt]
        if run.kind == "llm":
            return [{"role": "user", "content": content_text(run.prompt)}]
        return from_input(run.prompt)

    @staticmethod
    def _reply_from(response: Any) -> dict[str, Any]:
        generations = getattr(response, "generations", None) or []
        if not generations or not generations[0]:
            return {"role": "assistant", "content": ""}
        generation = generations[0][0]
        message = getattr(generation, "message", None)
        if message is not None:
            reply = from_message(message)
            reply["role"] = "assistant"
            return reply
        return {"role": "assistant", "content": getattr(generation, "text", "") or ""}

    @staticmethod
    def _error_reply(error: BaseException) -> dict[str, Any]:
        return {"role": "assistant", "content": "", "error": f"{type(error).__name__}: {error}"[:4000]}

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
        self._runs[run_id] = _Run(kind="chain", started=time.perf_counter(), metadata=metadata, prompt=inputs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        try:
            if self._root_of.pop(run_id, None) is not None:
                return
            run = self._finish(run_id)
            if run is not None:
                # A streamed chain starts with a placeholder input; the real one comes with its end.
                self._emit(run, from_input(run.prompt if inputs is None else inputs), from_output(outputs))
        except Exception:
            log.exception("convolens: could not record a chain run")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, inputs: Any = None, **kwargs: Any) -> None:
        try:
            if self._root_of.pop(run_id, None) is not None:
                return
            run = self._finish(run_id)
            if run is not None:
                self._emit(run, from_input(run.prompt if inputs is None else inputs), self._error_reply(error))
        except Exception:
            log.exception("convolens: could not record a failed chain run")

    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._adopt(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._adopt(run_id, parent_run_id)

    def _child_done(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self._root_of.pop(run_id, None)

    on_tool_end = on_tool_error = on_retriever_end = on_retriever_error = _child_done

    # -- the transcript ---------------------------------------------------------------------------
    def _emit(self, run: _Run, prompt: list[dict[str, Any]], reply: dict[str, Any]) -> None:
        latency_ms = (time.perf_counter() - run.started) * 1000
        metadata = run.metadata or {}
        user_id = metadata.get("user_id") or run.header_user_id or self.user_id
        tenant_id = metadata.get("tenant_id")
        thread = next((metadata[k] for k in THREAD_KEYS if metadata.get(k)), None) or self.conversation_id
        conversation_metadata = dict(self.metadata)
        for key, value in metadata.items():
            if key not in _CONSUMED_KEYS and not key.startswith(("ls_", "lc_", "langgraph_", "checkpoint_")):
                conversation_metadata[key] = value
        if run.model:
            conversation_metadata.setdefault("model", run.model)
        reply = {**reply, "latency_ms": latency_ms}
        if run.model:
            reply["model"] = run.model
        if run.input_tokens is not None:
            reply["input_tokens"] = run.input_tokens
        if run.output_tokens is not None:
            reply["output_tokens"] = run.output_tokens
        transcript = [*prompt, reply]

        if thread is not None:
            conversation_id = str(thread)
            start, transcript = self._threads.new_part(conversation_id, transcript)
            ids = [_message_id(conversation_id, start + i, m) for i, m in enumerate(transcript)]
        else:
            conversation_id = ev.new_id()
            ids = [ev.new_id() for _ in transcript]
        counters = self.client._counters
        at = ev.now()
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
        self.client.put_events(batch)

    # -- convenience ------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return self.client.flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        return self.client.shutdown(timeout)


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
