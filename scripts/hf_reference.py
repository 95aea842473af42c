#!/usr/bin/env python3
"""Reference dumps of a Llama-family GGUF model run by Hugging Face transformers, for checking
Kiln's LLM path against (logits, every stage's hidden states, greedy decoding).

What it does: loads the GGUF with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name,
dtype=torch.float32)` (transformers dequantizes every tensor exactly to float32 and undoes
llama.cpp's Q/K rotary permutation) and the tokenizer from the same file, then for each prompt
runs one full forward pass in float32 with forward hooks on the embedding, on every decoder
layer and on the final norm, and a greedy decode of `--greedy` tokens.

Why hooks and not `output_hidden_states`: transformers' `hidden_states` tuple holds the
embedding output and the inputs of layers 1.., but its LAST entry is the final-normed state, so
the raw output of the last decoder layer is missing from it. A forward hook on
`model.model.layers[i]` sees exactly what layer i returns (a `[1, n, hidden]` tensor), so the
dumps have `layers.0` .. `layers.{L-1}` all as the residual stream after that layer.

Run it from the repository root with the project venv (needs torch, transformers, gguf,
numpy and accelerate, which transformers wants for GGUF loading):

    /opt/kiln-venv/bin/python scripts/hf_reference.py \
        --gguf /work/models/SmolLM2-135M-Instruct.Q4_1.gguf --out /work/models/ref-smollm2 \
        --compact tests/fixtures/smollm2_reference.json

Options: `--prompts FILE.json` replaces the built-in prompts with a JSON list of
`{"name": ..., "text": ..., "chat": bool}`; `--greedy N` sets the number of greedy tokens
(default 32); `--compact FIXTURE.json` also writes the small JSON fixture described below.

Outputs under `--out DIR` (large; keep them out of the repository):

    DIR/manifest.json          model path, versions, dtype, stage list, prompts + token counts
    DIR/<prompt>/tokens.npy    int64 [n]            the prompt's token ids
    DIR/<prompt>/logits.npy    float32 [n, vocab]   logits at every prompt position
    DIR/<prompt>/embed.npy     float32 [n, hidden]  embedding output
    DIR/<prompt>/layers.<i>.npy float32 [n, hidden] output of decoder layer i (0 .. L-1)
    DIR/<prompt>/norm.npy      float32 [n, hidden]  after the final RMSNorm
    DIR/<prompt>/greedy.json   {"prompt_ids", "greedy", "text", "steps", ...}

`greedy.json`: `greedy` is N tokens decoded with the KV cache (`use_cache`), argmax at every
step, no stop at end-of-sequence (a plain argmax loop: `generate(min_new_tokens=...)` would
mask the EOS logit and so not be the argmax). `steps[k]` = {top1, top2, margin} comes from ONE
teacher-forced forward pass (no cache) over prompt + greedy tokens: the logits at position
n-1+k predict greedy token k, and `margin` = logit(top1) - logit(top2). Where `top1` differs
from `greedy[k]` (a near-tie decided differently by the cached and uncached paths) it is
listed in `teacher_forced_mismatches`.

Tokenization (as transformers does it for the model): plain prompts are `tokenizer(text)`
with its default special tokens; for SmolLM2 `add_bos_token` is False, so no BOS is added
(its BOS id 1 is `<|im_start|>`). Chat prompts are `apply_chat_template([{"role": "user",
"content": text}], add_generation_prompt=True)`; the template itself writes the
`<|im_start|>`/`<|im_end|>` markers (and, for SmolLM2, a default system message), and the
templated text is tokenized without adding further special tokens. The script checks that
tokenizing the templated text gives the same ids as the template's own tokenization.

The compact fixture (`--compact`, under 2 MB, committed for Rust tests that run without
torch) is one JSON object:

    {"format": "kiln-llm-reference-v1", "model": file name, "versions": {...},
     "config": {vocab, hidden, layers, heads, kv_heads, head_dim, rope_theta, rms_eps, ...},
     "logits_sample_ids": [...],            # the vocab ids whose logits are kept
     "logits_sample_rule": "...",           # how they were picked (text)
     "logits_decimals": 4,
     "prompts": [{"name", "text", "chat", "templated_text" (chat only), "ids",
                  "argmax": [per position], "margin": [per position, top1 - top2],
                  "logits_sample": [[per position: logits at logits_sample_ids]],
                  "last_logits_l2", "last_logits_logsumexp",   # full vocab, last position
                  "stage_last_l2": {"embed", "layers.0", ..., "norm"},  # last position
                  "greedy": [...], "greedy_text",
                  "steps": [{"top1", "top2", "margin"}, ...]}]}

The sample ids are 0..127 plus 128 ids spread evenly over the rest of the vocabulary
(`128 + i * (vocab - 128) // 128`); if the fixture would exceed 2 MB the sample drops to the
evenly spread half (64 low ids + 64 spread), which the header fields then say. Floats in the
fixture are rounded to 4 decimals (logits, margins) or 6 significant digits (norms).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

DEFAULT_GREEDY = 32
FIXTURE_LIMIT_BYTES = 2 * 1024 * 1024
LOGIT_DECIMALS = 4

LONG_TEXT = """\
The lighthouse at the end of the northern pier was built in 1887, when the harbour still \
served the fishing fleet and the coal barges that came down the river every spring. Its \
keeper lived in a small stone house at the foot of the tower, and for more than sixty years \
the same family climbed the one hundred and twelve steps each evening to light the lamp. \
The logbooks they kept are now in the town museum: weather, ships seen, repairs made, and \
now and then a line about a birth, a wedding or a storm that took the roof off the boat shed.

In the winter of 1903 the harbour froze for eleven days. The keeper's daughter, who was \
fourteen at the time, wrote that the ice was thick enough to walk on as far as the second \
buoy, and that a fox crossed it one morning carrying something silver in its mouth. The \
entry for the next day records only the temperature, the wind from the north-east, and the \
words "lamp lit at four, trimmed at ten, all well".

When the fleet moved to the deeper port across the bay, the pier fell quiet. The lamp was \
converted to electricity in 1952 and automated in 1971, and the keeper's house was let to \
summer visitors. A local society restored the tower in the 1990s, replacing the rusted \
gallery railing and repainting the lantern room in its original red and white. Today the \
light still flashes every ten seconds, visible for fourteen nautical miles on a clear night.

Visitors who climb the tower on open days are often surprised by how small the lantern room \
is. There is space for three or four people to stand around the lens, which was made in \
Paris and shipped in pieces packed in straw. The guides like to point out the scratches on \
the brass frame, left by the keepers' rings as they polished the glass every morning, and \
the pencil marks on the wall where the children of the family measured their height each \
birthday. The last mark is dated 1948 and reaches almost to the ceiling.

From the gallery you can see the whole bay: the old warehouses, now flats and cafes, the \
sailing club with its rows of dinghies, the long beach to the south where the dunes begin, \
and on a good day the hills on the far side of the water. The wind is almost always blowing, \
and the gulls ride it without moving their wings, hanging level with the rail as if they \
were waiting for someone to throw them a piece of bread.
"""

DEFAULT_PROMPTS = [
    {
        "name": "prose",
        "text": "The history of the printing press begins in the fifteenth century, when "
        "Johannes Gutenberg combined movable metal type with an oil-based ink and a "
        "screw press adapted from wine making. Within fifty years",
        "chat": False,
    },
    {
        "name": "code",
        "text": 'def fibonacci(n: int) -> list[int]:\n    """Return the first n Fibonacci '
        'numbers."""\n    result = []\n    a, b = 0, 1\n    for _ in range(n):\n'
        "        result.append(a)\n",
        "chat": False,
    },
    {
        "name": "chat",
        "text": "What are three good ways to keep a sourdough starter healthy?",
        "chat": True,
    },
    {
        "name": "unicode",
        "text": "Grüße aus München! Voilà un café crème à côté de l'hôtel. "
        "東京の天気は晴れです。北京欢迎你。 🙂🚀✨ naïve façade — “quotes” … end",
        "chat": False,
    },
    {"name": "long", "text": LONG_TEXT, "chat": False},
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", required=True, help="path of the GGUF model file")
    p.add_argument("--out", required=True, help="directory for the full dumps")
    p.add_argument("--prompts", help='JSON list of {"name", "text", "chat"} (default: built-in)')
    p.add_argument("--greedy", type=int, default=DEFAULT_GREEDY, help="greedy tokens to decode")
    p.add_argument("--compact", help="also write the compact JSON fixture to this path")
    return p.parse_args()


def load_model(gguf_path):
    """Tokenizer and float32 model from the GGUF (transformers dequantizes on load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    return tokenizer, model


def _ids_of(encoded):
    """Token ids from whatever a tokenizer call returned (a list, or a dict with input_ids)."""
    if isinstance(encoded, (list, tuple)):
        return [int(t) for t in encoded]
    return [int(t) for t in encoded["input_ids"]]


def tokenize_prompt(tokenizer, prompt):
    """Prompt ids the way transformers makes them; for chat prompts also the templated text."""
    if not prompt.get("chat"):
        return _ids_of(tokenizer(prompt["text"])), None
    messages = [{"role": "user", "content": prompt["text"]}]
    templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = _ids_of(tokenizer(templated, add_special_tokens=False))
    via_template = _ids_of(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    )
    if ids != via_template:
        raise SystemExit(f"chat prompt {prompt['name']!r}: templated text tokenizes differently")
    return ids, templated


class StageRecorder:
    """Forward hooks that keep each stage's output of the latest forward pass.

    Stages: `embed` (model.model.embed_tokens), `layers.i` (model.model.layers[i]: the
    residual stream after decoder layer i) and `norm` (model.model.norm). Each hook stores
    the module's output tensor `[1, n, hidden]` as float32 `[n, hidden]`.
    """

    def __init__(self, model):
        inner = model.model
        modules = [("embed", inner.embed_tokens)]
        modules += [(f"layers.{i}", layer) for i, layer in enumerate(inner.layers)]
        modules.append(("norm", inner.norm))
        self.names = [name for name, _ in modules]
        self.outputs = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            self.outputs[name] = tensor[0].detach().to(torch.float32).numpy().copy()

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def forward_logits(model, ids):
    """Logits [n, vocab] float32 of one uncached forward pass over `ids`."""
    with torch.inference_mode():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def greedy_decode(model, ids, steps):
    """`steps` argmax tokens decoded with the KV cache, no stop at end-of-sequence."""
    generated = []
    with torch.inference_mode():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=True)
        cache = out.past_key_values
        for _ in range(steps):
            token = int(torch.argmax(out.logits[0, -1]))
            generated.append(token)
            out = model(
                torch.tensor([[token]], dtype=torch.long), past_key_values=cache, use_cache=True
            )
            cache = out.past_key_values
    return generated


def top2(logits):
    """Per row of `logits` [m, vocab]: (top1 ids, top2 ids, top1 - top2 logit margins)."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    rows = np.arange(logits.shape[0])
    first, second = order[:, 0], order[:, 1]
    return first, second, logits[rows, first] - logits[rows, second]


def logsumexp(row):
    row = row.astype(np.float64)
    peak = row.max()
    return float(peak + np.log(np.exp(row - peak).sum()))


def run_prompt(model, tokenizer, recorder, prompt, greedy_steps, out_dir):
    """Dumps for one prompt into out_dir/<name>/; returns what the manifest/fixture need."""
    ids, templated = tokenize_prompt(tokenizer, prompt)
    n = len(ids)
    pdir = os.path.join(out_dir, prompt["name"])
    os.makedirs(pdir, exist_ok=True)

    recorder.outputs.clear()
    logits = forward_logits(model, ids)
    stages = dict(recorder.outputs)
    np.save(os.path.join(pdir, "tokens.npy"), np.asarray(ids, dtype=np.int64))
    np.save(os.path.join(pdir, "logits.npy"), logits.astype(np.float32))
    for name in recorder.names:
        assert stages[name].shape == (n, model.config.hidden_size), name
        np.save(os.path.join(pdir, f"{name}.npy"), stages[name])

    greedy = greedy_decode(model, ids, greedy_steps)
    recorder.outputs.clear()
    forced = forward_logits(model, ids + greedy)[n - 1 : n - 1 + greedy_steps]
    f1, f2, fmargin = top2(forced)
    steps = [
        {"top1": int(a), "top2": int(b), "margin": float(m)} for a, b, m in zip(f1, f2, fmargin)
    ]
    mismatches = [k for k, s in enumerate(steps) if s["top1"] != greedy[k]]
    greedy_json = {
        "prompt_ids": ids,
        "greedy": greedy,
        "text": tokenizer.decode(greedy),
        "steps": steps,
        "teacher_forced_mismatches": mismatches,
    }
    with open(os.path.join(pdir, "greedy.json"), "w") as f:
        json.dump(greedy_json, f, indent=1, ensure_ascii=False)

    a1, _, amargin = top2(logits)
    return {
        "prompt": prompt,
        "ids": ids,
        "templated": templated,
        "logits": logits,
        "argmax": a1,
        "margin": amargin,
        "stage_last_l2": {k: float(np.linalg.norm(v[-1].astype(np.float64))) for k, v in stages.items()},
        "greedy": greedy_json,
    }


def sample_ids(vocab, low=128, spread=128):
    """Ids 0..low-1 plus `spread` ids evenly spaced over [low, vocab)."""
    spaced = [low + i * (vocab - low) // spread for i in range(spread)]
    return list(range(low)) + spaced


def sig(x, digits=6):
    return float(f"{x:.{digits}g}")


def compact_fixture(results, model, gguf_path, versions, ids_sample, rule):
    cfg = model.config
    prompts = []
    for r in results:
        last = r["logits"][-1]
        entry = {
            "name": r["prompt"]["name"],
            "text": r["prompt"]["text"],
            "chat": bool(r["prompt"].get("chat")),
        }
        if r["templated"] is not None:
            entry["templated_text"] = r["templated"]
        entry.update(
            {
                "ids": r["ids"],
                "argmax": [int(a) for a in r["argmax"]],
                "margin": [round(float(m), LOGIT_DECIMALS) for m in r["margin"]],
                "logits_sample": [
                    [round(float(v), LOGIT_DECIMALS) for v in row]
                    for row in r["logits"][:, ids_sample]
                ],
                "last_logits_l2": sig(float(np.linalg.norm(last.astype(np.float64)))),
                "last_logits_logsumexp": sig(logsumexp(last)),
                "stage_last_l2": {k: sig(v) for k, v in r["stage_last_l2"].items()},
                "greedy": r["greedy"]["greedy"],
                "greedy_text": r["greedy"]["text"],
                "steps": [
                    {"top1": s["top1"], "top2": s["top2"], "margin": round(s["margin"], LOGIT_DECIMALS)}
                    for s in r["greedy"]["steps"]
                ],
            }
        )
        prompts.append(entry)
    return {
        "format": "kiln-llm-reference-v1",
        "made_by": "scripts/hf_reference.py",
        "model": os.path.basename(gguf_path),
        "versions": versions,
        "dtype": "float32 (GGUF weights dequantized by transformers; forward in float32)",
        "config": {
            "vocab": cfg.vocab_size,
            "hidden": cfg.hidden_size,
            "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
            "intermediate": cfg.intermediate_size,
            "rms_eps": cfg.rms_norm_eps,
            "rope_theta": _rope_theta(cfg),
            "tie_word_embeddings": bool(cfg.tie_word_embeddings),
        },
        "logits_sample_ids": ids_sample,
        "logits_sample_rule": rule,
        "logits_decimals": LOGIT_DECIMALS,
        "margin_definition": "logit(top1) - logit(top2), float32 logits, full vocabulary",
        "steps_definition": "teacher-forced pass over prompt+greedy; steps[k] from position n-1+k",
        "prompts": prompts,
    }


def _rope_theta(cfg):
    params = getattr(cfg, "rope_parameters", None) or {}
    return params.get("rope_theta", getattr(cfg, "rope_theta", None))


def write_compact(path, results, model, gguf_path, versions):
    """Write the fixture with 256 sampled ids, or 128 if 256 would exceed the size limit."""
    vocab = model.config.vocab_size
    choices = [
        (sample_ids(vocab, 128, 128), "ids 0..127 plus 128 + i*(vocab-128)//128 for i in 0..127"),
        (sample_ids(vocab, 64, 64), "ids 0..63 plus 64 + i*(vocab-64)//64 for i in 0..63 "
         "(reduced from 256 ids to stay under 2 MB)"),
    ]
    for ids_sample, rule in choices:
        fixture = compact_fixture(results, model, gguf_path, versions, ids_sample, rule)
        text = json.dumps(fixture, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) <= FIXTURE_LIMIT_BYTES:
            break
    else:
        raise SystemExit(f"compact fixture is {len(text.encode())} bytes even with 128 ids")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    return len(text.encode()) + 1, len(ids_sample)


def main():
    args = parse_args()
    import transformers

    prompts = DEFAULT_PROMPTS
    if args.prompts:
        with open(args.prompts) as f:
            prompts = json.load(f)
    names = [p["name"] for p in prompts]
    if len(set(names)) != len(names):
        raise SystemExit("prompt names must be unique")

    torch.manual_seed(0)
    t0 = time.time()
    tokenizer, model = load_model(args.gguf)
    print(f"loaded {args.gguf} in {time.time() - t0:.1f}s", file=sys.stderr)
    recorder = StageRecorder(model)
    os.makedirs(args.out, exist_ok=True)

    results = []
    for prompt in prompts:
        t0 = time.time()
        r = run_prompt(model, tokenizer, recorder, prompt, args.greedy, args.out)
        results.append(r)
        g = r["greedy"]
        print(
            f"{prompt['name']}: {len(r['ids'])} tokens, greedy {g['text']!r} "
            f"(teacher-forced mismatches: {g['teacher_forced_mismatches']}) "
            f"[{time.time() - t0:.1f}s]",
            file=sys.stderr,
        )
    recorder.remove()

    versions = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    manifest = {
        "model": os.path.abspath(args.gguf),
        "versions": versions,
        "dtype": "float32",
        "config": model.config.to_dict(),
        "stages": recorder.names,
        "stage_shape": "[n, hidden] float32, prompt positions",
        "greedy_steps": args.greedy,
        "prompts": [
            {
                "name": r["prompt"]["name"],
                "chat": bool(r["prompt"].get("chat")),
                "text": r["prompt"]["text"],
                "templated_text": r["templated"],
                "tokens": len(r["ids"]),
            }
            for r in results
        ],
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False, default=str)

    if args.compact:
        size, count = write_compact(args.compact, results, model, args.gguf, versions)
        print(f"wrote {args.compact}: {size} bytes, {count} sampled logit ids", file=sys.stderr)


if __name__ == "__main__":
    main()
