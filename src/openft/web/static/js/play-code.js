// "Copy as code" for the playground: the exact chat request a panel would send, written as a curl
// command and as a Python script on the official `openai` SDK. The API key is never written out:
// both read it from the OPENFT_API_KEY environment variable. Knows nothing about the DOM.

// The request body a panel sends (also what the snippets contain), without `stream`.
export function chatRequest(model, system, messages, { temperature, maxTokens, stop }) {
  const body = { model, messages: [...(system.trim() ? [{ role: "system", content: system }] : []), ...messages] };
  if (temperature !== null && temperature !== undefined && temperature !== "") body.temperature = Number(temperature);
  if (maxTokens) body.max_tokens = Number(maxTokens);
  if (stop && stop.length) body.stop = stop;
  return body;
}

// "a, b\n" -> ["a", "b\n"]: comma-separated stop sequences; \n and \t are written as escapes.
export function parseStops(text) {
  return String(text || "").split(",").map((s) => s.trim()).filter(Boolean)
    .map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t")).slice(0, 4);
}

function shellQuote(s) { return `'${s.replace(/'/g, `'\\''`)}'`; }

export function curlCode(baseUrl, body) {
  return [
    `curl ${baseUrl}/chat/completions \\`,
    `  -H "Authorization: Bearer $OPENFT_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(JSON.stringify({ ...body, stream: true }, null, 2))}`,
  ].join("\n");
}

// JSON -> Python literal (True/False/None; strings as JSON strings, which Python reads alike).
function py(value, indent = 0) {
  const pad = " ".repeat(indent), inner = " ".repeat(indent + 4);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + py(v, indent + 4)).join(",\n")},\n${pad}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.every(([, v]) => typeof v !== "object" || v === null)) {
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(", ")}}`;
    }
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, indent + 4)}`).join(",\n")},\n${pad}}`;
  }
  return JSON.stringify(value);
}

export function pythonCode(baseUrl, body) {
  const { model, messages, ...params } = body;
  const args = [`    model=${JSON.stringify(model)},`, `    messages=${py(messages, 4)},`,
    ...Object.entries(params).map(([k, v]) => `    ${k}=${py(v, 4)},`), "    stream=True,"];
  return [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ["OPENFT_API_KEY"])`,
    "stream = client.chat.completions.create(",
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
    "print()",
  ].join("\n");
}
