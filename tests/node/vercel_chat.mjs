// A two-turn chat on the Vercel AI SDK, its telemetry exported over OTLP/HTTP protobuf. Configured as the
// README tells an app: OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS (read by the exporter);
// STUB_URL is the OpenAI-compatible stub the test runs.
import { createOpenAI } from "@ai-sdk/openai";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BasicTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { generateText } from "ai";

const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter())] });
const tracer = provider.getTracer("weather-app");
const openai = createOpenAI({ baseURL: process.env.STUB_URL, apiKey: "sk-test" });
const telemetry = { isEnabled: true, tracer, metadata: { sessionId: "weather-chat", userId: "u-oslo" } };
const system = "You are a weather bot.";
const messages = [{ role: "user", content: "Weather in Oslo?" }];

const first = await generateText({ model: openai.chat("gpt-4o-mini"), system, messages, experimental_telemetry: telemetry });
messages.push({ role: "assistant", content: first.text }, { role: "user", content: "And tomorrow?" });
await generateText({ model: openai.chat("gpt-4o-mini"), system, messages, experimental_telemetry: telemetry });
await provider.shutdown();
