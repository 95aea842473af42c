#!/usr/bin/env python3
"""LLM speed of Kiln next to llama.cpp and PyTorch, measured in one run on one machine.

What it measures, for each thread count of `--threads` (default 1,2), on one GGUF model:

    pp<N>   prompt processing: tokens/s to evaluate a prompt of exactly N tokens from an empty
            KV cache (`--pp`, default 128,512): N / time of one evaluation
    tg<M>   decode: tokens/s of M single-token steps after a short prompt (`--tg`, default
            128; the prompt is `--tg-prompt` tokens, default 16, evaluated untimed)

Each number is the median of `--reps` timed runs (default 5). The runs are interleaved:
`--rounds` rounds (default: as many as reps, one timed run each) in which every side in turn
runs each test after one untimed warm-up, so a slow spell of a shared machine (other
tenants, the host's clock) hits every side alike instead of whichever side happened to be
running; `--rounds 1` runs each side's reps back to back instead. The sides (`--sides`,
default all three):

    llama.cpp  llama-cpp-python's `Llama(model_path, n_threads=t, n_threads_batch=t,
               n_ctx=1024, n_batch=512, n_ubatch=512, logits_all=False)`; pp times
               `llm.eval(tokens)` after `llm.reset()`, tg times `llm.eval([token])` M times.
               Its other settings are the library's defaults (flash attention off, f16 KV
               cache, mmap); last-position logits only.
    torch      transformers' LlamaForCausalLM loaded from the same GGUF (weights dequantized
               to float32), `torch.set_num_threads(t)`, `torch.inference_mode()`; pp is one
               forward over N tokens with a fresh DynamicCache and `logits_to_keep=1` (the LM
               head on the last position only, as llama.cpp does), tg is M forwards of one
               token with the cache.
    kiln       the Kiln binary (`--kiln`, default target/release/kiln) as a subprocess:
               `kiln bench MODEL --threads T --pp 128,512 --tg 128 --reps R --json` (R: the
               round's share of `--reps`, one by default), which
               prints one JSON object per line, {"test": "pp128", "threads": T,
               "tok_per_s": [one per rep], "median": x}. Kiln picks its own token ids and
               warm-up. If the binary is missing or fails, the side is reported as
               "kiln: unavailable (<reason>)" and the peers are still measured.

llama.cpp and torch are fed the same token ids: the model's tokenizer (transformers, from the
GGUF) on a fixed English text repeated to length; pp<N> uses its first N ids, tg uses the
first `--tg-prompt` ids as the prompt and the next M ids as the decoded tokens (teacher
forcing: the ids are fixed, no sampling).

Memory bandwidth is measured in the same run at each thread count: `torch.set_num_threads(t)`
and the best of 5 `x.sum()` over a 1 GiB float32 tensor (`--bw-gib`), bytes / time. Decode
is bandwidth-bound: every weight tensor is read once per token, so the bytes per token are the
sum of the GGUF's tensor data bytes (read with the `gguf` package; the tied embedding is read
once, as the LM head; KV-cache and activation traffic are ignored). The bandwidth fraction of
a side = its tg tokens/s / (bandwidth / bytes per token). The same yardstick, the GGUF's
bytes, is used for every side; torch reads float32 weights (about 4x more bytes), so its
fraction of its own limit is printed separately under the table.

Run it from the repository root (needs torch, transformers, gguf, numpy, accelerate and
llama-cpp-python, e.g. the project venv after `/opt/kiln-venv/bin/pip install
llama-cpp-python`; build Kiln first with `cargo build --release`):

    /opt/kiln-venv/bin/python benches/llm_peers.py \
        --gguf /work/models/SmolLM2-135M-Instruct.Q4_1.gguf --threads 1,2 --reps 5 \
        --json /tmp/llm_peers.json

Output: on stdout a Markdown header (CPU, date, versions, bandwidth, bytes per token) and one
table with, per threads x test, the tokens/s of each side, the ratios Kiln/llama.cpp,
Kiln/torch and Kiln/faster peer, and for tg the bandwidth fraction of each side; progress on
stderr. `--json OUT` also saves every raw number (each rep, medians, bandwidths, metadata).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ALL_SIDES = ("kiln", "llama.cpp", "torch")

# Any fixed text works: the ids only need to be valid; it is repeated to the needed length.
TOKEN_TEXT = (
    "A river starts as rain on the hills. The water runs down small streams, over stones and "
    "under bridges, past farms and villages, and joins other streams until it is wide enough "
    "for boats. Towns grow where it can be crossed, mills where it falls, and ports where it "
    "meets the sea. Over thousands of years it cuts its valley deeper and carries the hills "
    "away, one grain of sand at a time, to build new land at its mouth. "
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", required=True, help="GGUF model file")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--pp", default="128,512", help="comma-separated prompt lengths")
    p.add_argument("--tg", type=int, default=128, help="decode steps")
    p.add_argument("--tg-prompt", type=int, default=16, help="prompt length before decoding")
    p.add_argument("--reps", type=int, default=5, help="timed runs per test (median)")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds the reps are spread over (default: one per rep)",
    )
    p.add_argument("--sides", default=",".join(ALL_SIDES), help="subset of kiln,llama.cpp,torch")
    p.add_argument("--kiln", default="target/release/kiln", help="Kiln binary")
    p.add_argument("--kiln-timeout", type=float, default=1800, help="seconds per kiln call")
    p.add_argument("--bw-gib", type=float, default=1.0, help="GiB summed for bandwidth")
    p.add_argument("--json", help="save the raw numbers to this file")
    args = p.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.pp = [int(n) for n in args.pp.split(",")]
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    for side in args.sides:
        if side not in ALL_SIDES:
            p.error(f"unknown side {side!r} (choose from {', '.join(ALL_SIDES)})")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.rounds is None:
        args.rounds = args.reps
    if not 1 <= args.rounds <= args.reps:
        p.error("--rounds must be between 1 and --reps")
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- machine


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def load_average():
    """The 1-minute load average (other work on the machine skews every number)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def gguf_weight_bytes(path):
    """Sum of the tensor data bytes in the GGUF: what one decode token reads."""
    import gguf

    reader = gguf.GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors), len(reader.tensors)


def memory_bandwidth(threads, gib, tries=5):
    """Best-of-`tries` read bandwidth (bytes/s) of `x.sum()` over a `gib` GiB float32 tensor."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
    x.sum()  # touch every page before timing
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    nbytes = x.numel() * 4
    del x
    return nbytes / best


# ---------------------------------------------------------------------------------- tokens


def bench_token_ids(gguf_path, count):
    """`count` valid token ids: the model's tokenizer on TOKEN_TEXT, repeated to length."""
    from transformers import AutoTokenizer

    directory, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    ids = []
    while len(ids) < count:
        ids += tokenizer(TOKEN_TEXT, add_special_tokens=False)["input_ids"]
    return [int(t) for t in ids[:count]]


def timed_reps(fn, reps):
    """One untimed warm-up call of fn, then `reps` timed calls; fn returns its own seconds."""
    fn()
    return [fn() for _ in range(reps)]


def round_reps(reps, rounds):
    """How many timed runs each of `rounds` interleaved rounds does: `reps` in all."""
    return [reps // rounds + (1 if i < reps % rounds else 0) for i in range(rounds)]


def summarize(test, threads, tokens, seconds):
    rates = [tokens / s for s in seconds]
    return {
        "test": test,
        "threads": threads,
        "tok_per_s": rates,
        "median": statistics.median(rates),
        "seconds": seconds,
    }


# ---------------------------------------------------------------------------------- llama.cpp


class LlamaCppSide:
    name = "llama.cpp"

    def __init__(self, gguf_path):
        import llama_cpp

        self.lib = llama_cpp
        self.path = gguf_path
        self.version = getattr(llama_cpp, "__version__", "?")
        info = llama_cpp.llama_print_system_info()
        self.system_info = info.decode(errors="replace").strip() if info else ""

    def run(self, threads, ids, args):
        llm = self.lib.Llama(
            model_path=self.path,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=1024,
            n_batch=512,
            n_ubatch=512,
            verbose=False,
            logits_all=False,
        )
        results = []
        for n in args.pp:
            prompt = ids[:n]

            def pp():
                llm.reset()
                t0 = time.perf_counter()
                llm.eval(prompt)
                return time.perf_counter() - t0

            results.append(summarize(f"pp{n}", threads, n, timed_reps(pp, args.reps)))

        prompt = ids[: args.tg_prompt]
        steps = ids[args.tg_prompt : args.tg_prompt + args.tg]

        def tg():
            llm.reset()
            llm.eval(prompt)
            t0 = time.perf_counter()
            for token in steps:
                llm.eval([token])
            return time.perf_counter() - t0

        results.append(summarize(f"tg{args.tg}", threads, args.tg, timed_reps(tg, args.reps)))
        if hasattr(llm, "close"):
            llm.close()
        return results


# ---------------------------------------------------------------------------------- torch


class TorchSide:
    name = "torch"

    def __init__(self, gguf_path):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
        directory, name = os.path.split(os.path.abspath(gguf_path))
        self.model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, dtype=torch.float32
        )
        self.model.eval()
        self.param_bytes = sum(
            p.numel() * p.element_size() for p in self.model.parameters()
        )  # tied embedding counted once

    def run(self, threads, ids, args):
        torch = self.torch
        from transformers import DynamicCache

        torch.set_num_threads(threads)
        model = self.model
        results = []
        with torch.inference_mode():
            for n in args.pp:
                prompt = torch.tensor([ids[:n]], dtype=torch.long)

                def pp():
                    t0 = time.perf_counter()
                    model(
                        prompt,
                        past_key_values=DynamicCache(config=model.config),
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    return time.perf_counter() - t0

                results.append(summarize(f"pp{n}", threads, n, timed_reps(pp, args.reps)))

            prompt = torch.tensor([ids[: args.tg_prompt]], dtype=torch.long)
            steps = [
                torch.tensor([[t]], dtype=torch.long)
                for t in ids[args.tg_prompt : args.tg_prompt + args.tg]
            ]

            def tg():
                cache = DynamicCache(config=model.config)
                model(prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                t0 = time.perf_counter()
                for token in steps:
                    model(token, past_key_values=cache, use_cache=True, logits_to_keep=1)
                return time.perf_counter() - t0

            results.append(summarize(f"tg{args.tg}", threads, args.tg, timed_reps(tg, args.reps)))
        return results


# ---------------------------------------------------------------------------------- kiln


class KilnUnavailable(Exception):
    pass


class KilnSide:
    name = "kiln"

    def __init__(self, binary, timeout):
        self.binary = binary
        self.timeout = timeout
        resolved = binary if os.path.sep in binary else shutil.which(binary)
        if not resolved or not os.path.isfile(resolved):
            raise KilnUnavailable(f"binary {binary!r} not found")
        if not os.access(resolved, os.X_OK):
            raise KilnUnavailable(f"binary {binary!r} is not executable")
        self.version = self._version()

    def _version(self):
        try:
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=60
            )
            return (out.stdout.strip() or out.stderr.strip()).splitlines()[0] if out.returncode == 0 else "?"
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"

    def run(self, threads, gguf_path, args):
        cmd = [
            self.binary, "bench", gguf_path,
            "--threads", str(threads),
            "--pp", ",".join(str(n) for n in args.pp),
            "--tg", str(args.tg),
            "--reps", str(args.reps),
            "--json",
        ]  # fmt: skip
        log("  $ " + " ".join(cmd))
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise KilnUnavailable(f"`kiln bench` timed out after {self.timeout:.0f} s")
        except OSError as e:
            raise KilnUnavailable(f"cannot run {self.binary!r}: {e}")
        if out.returncode != 0:
            last = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or [""]
            raise KilnUnavailable(f"`kiln bench` exited {out.returncode}: {last[0][:200]}")
        results = []
        for line in out.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "test" in obj and "median" in obj:
                obj.setdefault("threads", threads)
                results.append(obj)
        if not results:
            raise KilnUnavailable("`kiln bench` printed no JSON results")
        return results


# ---------------------------------------------------------------------------------- report


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def render(meta, medians, tests, threads_list, sides):
    """The Markdown header and table."""
    lines = [
        f"LLM speed, {meta['model']} ({meta['date']})",
        "",
        f"- CPU: {meta['cpu']} ({meta['cpus']} CPUs); Python {meta['python']}; 1-minute load "
        f"average {meta['load_start']} at the start, {meta['load_end']} at the end",
        f"- versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
        f"- weight bytes per decode token (GGUF tensor data, {meta['tensor_count']} tensors): "
        f"{meta['weight_bytes'] / 1e6:.1f} MB",
        "- read bandwidth (torch `x.sum()` over "
        f"{meta['bw_gib']:g} GiB, best of 5): "
        + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {bw / 1e9:.1f} GB/s"
                    for t, bw in meta["bandwidth"].items()),
        f"- tok/s, median of {meta['reps']} runs in {meta['rounds']} interleaved round"
        f"{'s' if meta['rounds'] > 1 else ''} (each side in turn, a warm-up per round); "
        f"pp<N>: a prompt of N tokens "
        f"from an empty cache; tg{meta['tg']}: {meta['tg']} single-token steps after a "
        f"{meta['tg_prompt']}-token prompt",
    ]
    for side, reason in meta["unavailable"].items():
        lines.append(f"- {side}: unavailable ({reason})")
    if meta.get("llama_cpp_system_info"):
        lines.append(f"- llama.cpp system info: `{meta['llama_cpp_system_info']}`")
    lines += [
        "",
        "| threads | test | kiln | llama.cpp | torch | kiln / llama.cpp | kiln / torch "
        "| kiln / faster peer | BW fraction kiln / llama.cpp / torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    torch_own = []
    for t in threads_list:
        bw = meta["bandwidth"][t]
        limit = bw / meta["weight_bytes"]  # tok/s if decode only read the GGUF's weights
        for test in tests:
            k, l, p = (medians.get((side, t, test)) for side in ALL_SIDES)
            peers = [v for v in (l, p) if v is not None]
            faster = max(peers) if peers else None
            if test.startswith("tg"):
                frac = " / ".join(fmt(ratio(v, limit), 2) for v in (k, l, p))
                if p is not None and meta.get("torch_param_bytes"):
                    own = p / (bw / meta["torch_param_bytes"])
                    torch_own.append(f"{t} thread{'s' if t > 1 else ''}: {own:.2f}")
            else:
                frac = "–"
            lines.append(
                f"| {t} | {test} | {fmt(k)} | {fmt(l)} | {fmt(p)} | {fmt(ratio(k, l), 2)} "
                f"| {fmt(ratio(k, p), 2)} | {fmt(ratio(k, faster), 2)} | {frac} |"
            )
    lines.append("")
    lines.append(
        "BW fraction = tg tok/s / (bandwidth / GGUF weight bytes per token), the same "
        "yardstick for every side."
    )
    if torch_own:
        lines.append(
            f"torch reads float32 weights ({meta['torch_param_bytes'] / 1e6:.0f} MB per token); "
            "its fraction of its own bandwidth limit: " + ", ".join(torch_own) + "."
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    import torch  # for the bandwidth measurement

    meta = {
        "model": os.path.basename(args.gguf),
        "model_path": os.path.abspath(args.gguf),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {"numpy": np.__version__},
        "reps": args.reps,
        "rounds": args.rounds,
        "tg": args.tg,
        "tg_prompt": args.tg_prompt,
        "pp": args.pp,
        "bw_gib": args.bw_gib,
        "bandwidth": {},
        "unavailable": {},
        "load_start": load_average(),
    }
    meta["weight_bytes"], meta["tensor_count"] = gguf_weight_bytes(args.gguf)
    tests = [f"pp{n}" for n in args.pp] + [f"tg{args.tg}"]
    ids = bench_token_ids(args.gguf, max(max(args.pp), args.tg_prompt + args.tg))

    sides = {}
    for name in args.sides:
        try:
            if name == "kiln":
                sides[name] = KilnSide(args.kiln, args.kiln_timeout)
            elif name == "llama.cpp":
                sides[name] = LlamaCppSide(args.gguf)
                meta["llama_cpp_system_info"] = sides[name].system_info
            else:
                sides[name] = TorchSide(args.gguf)
                meta["torch_param_bytes"] = sides[name].param_bytes
            meta["versions"][name] = sides[name].version
        except (KilnUnavailable, ImportError, OSError, ValueError, RuntimeError) as e:
            meta["unavailable"][name] = str(e)
            print(f"{name}: unavailable ({e})", flush=True)

    raw = []
    medians = {}
    for t in args.threads:
        meta["bandwidth"][t] = memory_bandwidth(t, args.bw_gib)
        log(f"threads {t}: bandwidth {meta['bandwidth'][t] / 1e9:.1f} GB/s")
        merged = {}  # (side, test) -> the result with every round's runs
        failed = set()
        for rnd, reps in enumerate(round_reps(args.reps, args.rounds)):
            round_args = argparse.Namespace(**{**vars(args), "reps": reps})
            for name, side in sides.items():
                if name in failed:
                    continue
                log(f"threads {t}, round {rnd + 1}/{args.rounds}: {name}")
                try:
                    if name == "kiln":
                        results = side.run(t, args.gguf, round_args)
                    else:
                        results = side.run(t, ids, round_args)
                except (KilnUnavailable, RuntimeError, OSError, ValueError) as e:
                    meta["unavailable"][f"{name} at {t} thread(s)"] = str(e)
                    print(f"{name}: unavailable ({e})", flush=True)
                    failed.add(name)
                    continue
                for r in results:
                    log(f"  {r['test']}: {r['median']:.1f} tok/s")
                    into = merged.setdefault((name, r["test"]), {**r, "tok_per_s": [], "seconds": []})
                    into["tok_per_s"] += r["tok_per_s"]
                    into["seconds"] += r.get("seconds", [])
        for (name, test), r in merged.items():
            if name in failed:
                continue
            r["median"] = statistics.median(r["tok_per_s"])
            r["side"] = name
            raw.append(r)
            medians[(name, t, test)] = r["median"]

    meta["load_end"] = load_average()
    table = render(meta, medians, tests, args.threads, args.sides)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": raw, "markdown": table}, f, indent=1, default=str)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
