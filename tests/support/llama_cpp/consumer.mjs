// llama.cpp reading a GGUF file, as the GGUF export's consumer check needs it (tests/serve/test_gguf_consumers.py).
//
// Run as `node consumer.mjs REQUEST.json OUT_DIR`, in its own process, so that a native crash in llama.cpp
// ends this process (the test reports its signal) and not pytest. llama.cpp comes from node-llama-cpp's
// prebuilt CPU binaries (package.json here): no compiling, one libggml-cpu variant per x86-64 level,
// picked at run time. It knows nothing of openft: it tokenizes, decodes greedily and hands back logits.
//
// REQUEST: {"gguf": path, "threads": n, "n_ctx": n, "n_new": n, "stop_ids": [id...],
//           "prompts": [{"text": rendered prompt, "ids": the token ids to feed}], "fault": null | "segfault"}
// ("segfault": die of SIGSEGV once the model is loaded, as llama.cpp's own crashes do; for the test of
// how such a crash is reported)
// OUT_DIR/result.json: {"system_info": str, "cpu_variant": str, "n_vocab": n,
//           "prompts": [{"tokens": ids llama.cpp makes of text (special tokens parsed), "generated": ids}]}
// OUT_DIR/logits-<i>.f32: prompt i's raw logits, float32, one row of n_vocab per generated position
// (the row that chose each generated token, and the one that chose the stop token if it came).
import fs from "node:fs";
import path from "node:path";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [requestFile, outDir] = process.argv.slice(2);
const req = JSON.parse(fs.readFileSync(requestFile, "utf8"));
let cpuVariant = "";
const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false,
    logLevel: LlamaLogLevel.debug,
    logger(level, message) {   // ggml names the CPU variant it loaded: "loaded CPU backend from .../libggml-cpu-zen4.so"
        const m = /libggml-cpu-([\w-]+)\.so/.exec(message);
        if (m) cpuVariant = m[1];
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) process.stderr.write(message + "\n");
    },
});
const model = await llama.loadModel({modelPath: req.gguf, gpuLayers: 0});
const context = await model.createContext({contextSize: req.n_ctx, threads: req.threads, sequences: 1});
const sequence = context.getSequence();
process.stderr.write(`llama.cpp ${llama.llamaCppRelease.release}, CPU variant ${cpuVariant || "(built in)"}\n`);
if (req.fault === "segfault") process.kill(process.pid, "SIGSEGV");
const stop = new Set(req.stop_ids);
const out = [];

/** Evaluate `ids` after what the sequence holds; the raw logits for the next position, as a dense row. */
async function next(ids) {
    const input = ids.map((id, i) => (i < ids.length - 1 ? id : [id, {generateNext: {logits: true}}]));
    const res = await sequence.controlledEvaluate(input);
    return res[ids.length - 1].next.logits;   // Map token -> logit, every token of the vocabulary
}

let vocab = 0;
for (const [i, prompt] of req.prompts.entries()) {
    await sequence.clearHistory();
    const tokens = Array.from(model.tokenize(prompt.text, true));
    const rows = [];
    const generated = [];
    let logits = await next(prompt.ids);
    for (let n = 0; n < req.n_new; n++) {
        vocab = Math.max(vocab, logits.size);
        const row = new Float32Array(logits.size);
        let best = 0;
        for (const [tok, value] of logits) row[tok] = value;
        for (let t = 1; t < row.length; t++) if (row[t] > row[best]) best = t;   // greedy, lowest id on a tie
        rows.push(row);
        if (stop.has(best)) break;
        generated.push(best);
        if (n + 1 < req.n_new) logits = await next([best]);
    }
    const flat = new Float32Array(rows.length * vocab);
    rows.forEach((row, r) => flat.set(row, r * vocab));
    fs.writeFileSync(path.join(outDir, `logits-${i}.f32`), Buffer.from(flat.buffer));
    out.push({tokens, generated});
}
fs.writeFileSync(path.join(outDir, "result.json"),
    JSON.stringify({system_info: llama.systemInfo, cpu_variant: cpuVariant, n_vocab: vocab, prompts: out}));
await context.dispose();
await model.dispose();
await llama.dispose();
