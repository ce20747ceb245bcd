// A workload using the official OpenAI Node SDK with its default base URL
// (https://api.openai.com/v1). The e2e tests run it in a cgroup, with a
// private /etc/hosts and only the agent's CA trusted; it prints one JSON
// object with what it received.
import OpenAI from "openai";

const mode = process.argv[2] ?? "chat";
const client = new OpenAI({ apiKey: "sk-test-not-a-real-key", maxRetries: 0, timeout: 20000 });
const out = { pid: process.pid, mode };

try {
  if (mode === "chat") {
    const r = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hello from node" }],
    });
    out.text = r.choices[0].message.content;
    out.usage = r.usage;
  } else if (mode === "chat-stream") {
    const stream = await client.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Stream hello from node" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    out.text = "";
    for await (const chunk of stream) {
      out.text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) out.usage = chunk.usage;
    }
  } else if (mode === "responses") {
    const r = await client.responses.create({ model: "gpt-4o-mini", input: "Respond hello from node" });
    out.text = r.output_text;
    out.usage = r.usage;
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} catch (e) {
  out.error = String(e);
}
console.log(JSON.stringify(out));
