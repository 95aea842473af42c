#!/usr/bin/env python3
"""GPU peers for Kiln's WGSL/wgpu backend: PyTorch GEMM and SmolLM2 speed on one GPU.

Self-contained: needs torch, numpy and (for the LLM part) transformers plus the `gguf`
package, which may live outside the interpreter's site-packages (`--site`). Nothing is
downloaded. Two parts, each skippable:

GEMM (`--skip-gemm` to leave out)
    C[M,N] = A[M,K] @ B[N,K]^T through `torch.mm(a, b.t(), out=c)` (cuBLAS on CUDA), the
    layout of a linear layer x @ W^T and of Kiln's `gemm_nt`. Sizes (`--gemm-sizes`,
    default 512^3, 1024^3, 2048^3, 4096^3 and SmolLM2-135M's MLP gate/up projection at
    prefill, 512x1536x576, and at decode, 1x1536x576), for each dtype of `--dtypes`:
      f32  true float32: `torch.backends.cuda.matmul.allow_tf32 = False` (no TF32), set
           once at the start and recorded in the JSON;
      f16  float16 inputs and output, PyTorch's default cuBLAS settings (recorded).
    Inputs are uniform random in [-1, 1) from a fixed seed. After `--warmup` untimed calls,
    each timed sample is `inner` back-to-back calls between two CUDA events (on CPU:
    time.perf_counter), `inner` chosen so that a sample lasts at least `--min-sample-ms`
    (small products take microseconds, below the events' useful resolution); a sample's time
    per call = elapsed / inner. Reported: the median of `--reps` samples, GFLOP/s =
    2*M*N*K / time, and GB/s = (M*K + N*K + M*N) * element size / time (for M = 1 the
    product is a matrix-vector product bound by reading B). The operands stay where the
    previous call left them, so small shapes run from the GPU's L2 cache, as a peer
    called repeatedly in a loop does. On CUDA each size is timed a second way (unless
    `--no-graph`): the same `inner` calls captured in one CUDA graph and replayed between two
    events, which removes the host's per-call launch cost (it dominates the microsecond-scale
    decode shape); both figures are reported.

LLM (`--skip-llm` to leave out; needs `--gguf`)
    SmolLM2-135M-Instruct from the GGUF file through transformers:
    `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=D)` (transformers
    dequantizes the Q4_1/Q8_0 tensors to D; where its `GgufConfig` has `dequantize`, that is
    asked for explicitly, so that a transformers able to keep the blocks packed still gives the
    dense model), moved to `--device`, `eval()`, the model's default attention implementation;
    the JSON records it, the parameter dtypes and the linear module classes. HF_HUB_OFFLINE
    and TRANSFORMERS_OFFLINE default to 1. For each dtype and each mode of `--modes`:
      eager    the model as loaded;
      compile  `model.forward = torch.compile(model.forward)` (default mode, default
               options), so that both a direct call and `model.generate` (which calls the
               module, not a compiled wrapper) run the compiled forward. If compiling or
               running fails, the error string is recorded and the script goes on.
    Token ids are fixed: uniform in [0, vocab) from torch.Generator seeded with 0 (the
    values only need to be valid ids). Everything runs under torch.inference_mode(), with
    `torch.cuda.synchronize()` before reading time.perf_counter() on each side of a run.
      pp<N>   (`--pp`, default 512) prompt processing: one forward of N tokens from an empty
              DynamicCache with `logits_to_keep=1` (the LM head on the last position only,
              as `kiln bench` and llama.cpp do); N / time, median of `--reps` runs after
              `--llm-warmup` untimed ones.
      tg<M>   (`--tg`, default 128) decode, two measurements, median of `--tg-reps` runs
              after `--llm-warmup` untimed ones, after a `--tg-prompt`-token prompt
              (default 16):
              generate  `model.generate(ids, max_new_tokens=M, min_new_tokens=M,
                        do_sample=False)` (greedy, DynamicCache); reported as M / (time of
                        the whole call). The call includes the prompt's forward (the first
                        of its M forwards) and generate's per-step bookkeeping (logits
                        processors, stopping criteria, which read a flag back from the GPU
                        every step).
              loop      the prompt's forward untimed, then M single-token forwards with the
                        cache, each next token the argmax of the last logits, kept on the
                        GPU (no host round trip until the final synchronize); M / time of
                        the M steps. This is the model's own decode cost, the figure
                        comparable to `kiln bench --tg` and to benches/llm_peers.py.
    For the compile mode the JSON also keeps the warm-up (compiling) calls' times and
    torch._dynamo's counters (graphs, graph breaks, recompiles).

Output: progress on stderr; on stdout a Markdown header (device, versions, settings) and the
tables; `--json PATH` saves every raw sample and the metadata (rewritten after every
measurement, so a run that is cut off keeps what it measured).

Run on the GPU machine from the repository root, with gguf importable from --site (a
directory it was installed into with `pip install --target`, or a directory holding the
gguf wheel, which imports straight from the zip):

    python3 benches/gpu_peers.py --gguf tests/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --site /tmp/site --json gpu_peers.json

A quick check of the code paths on a CPU-only machine:

    /opt/kiln-venv/bin/python benches/gpu_peers.py --device cpu --dtypes f32 --reps 1 \\
        --gemm-sizes 64x64x64,1x1536x576 --gguf tests/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --pp 64 --tg 8 --tg-reps 1 --modes eager
"""

import argparse
import datetime
import glob
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

DEFAULT_GEMM_SIZES = "512x512x512,1024x1024x1024,2048x2048x2048,4096x4096x4096,512x1536x576,1x1536x576"
DTYPES = ("f32", "f16")
MODES = ("eager", "compile")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--gguf", help="GGUF model file (needed unless --skip-llm)")
    p.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="DIR",
        help="put DIR first on sys.path (and any *.whl in it; or a .whl file itself); "
        "repeatable; for gguf when it is not installed",
    )
    p.add_argument("--json", metavar="PATH", help="save the results and metadata here")
    p.add_argument("--device", default="cuda", help="torch device (cpu for a smoke test)")
    p.add_argument("--dtypes", default="f32,f16", help="comma-separated subset of f32,f16")
    p.add_argument("--skip-gemm", action="store_true", help="leave out the GEMM part")
    p.add_argument("--skip-llm", action="store_true", help="leave out the LLM part")
    p.add_argument("--reps", type=int, default=20, help="timed samples per GEMM and per pp (median)")
    p.add_argument("--warmup", type=int, default=5, help="untimed GEMM calls before timing")
    p.add_argument(
        "--min-sample-ms",
        type=float,
        default=1.0,
        help="a GEMM sample repeats the call until it lasts at least this long",
    )
    p.add_argument(
        "--no-graph",
        action="store_true",
        help="CUDA only: skip the second GEMM timing through a captured CUDA graph",
    )
    p.add_argument(
        "--gemm-sizes",
        default=DEFAULT_GEMM_SIZES,
        help="comma-separated MxNxK (A is MxK, B is NxK, C = A @ B^T)",
    )
    p.add_argument("--modes", default="eager,compile", help="comma-separated subset of eager,compile")
    p.add_argument("--pp", type=int, default=512, help="prompt length of the prefill test")
    p.add_argument("--tg", type=int, default=128, help="decode steps")
    p.add_argument("--tg-prompt", type=int, default=16, help="prompt length before decoding")
    p.add_argument("--tg-reps", type=int, default=5, help="timed runs per decode measurement")
    p.add_argument("--llm-warmup", type=int, default=2, help="untimed LLM runs before timing")
    p.add_argument(
        "--layers",
        type=int,
        help="keep only the first N decoder layers (smoke tests only; numbers are then not "
        "SmolLM2's)",
    )
    args = p.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r} (choose from {', '.join(DTYPES)})")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r} (choose from {', '.join(MODES)})")
    try:
        args.gemm_sizes = [
            tuple(int(v) for v in s.lower().split("x")) for s in args.gemm_sizes.split(",") if s.strip()
        ]
    except ValueError:
        p.error("--gemm-sizes: expected MxNxK,MxNxK,...")
    if any(len(s) != 3 or min(s) < 1 for s in args.gemm_sizes):
        p.error("--gemm-sizes: expected MxNxK with positive M, N, K")
    if min(args.reps, args.tg_reps) < 1 or min(args.warmup, args.llm_warmup) < 0:
        p.error("--reps/--tg-reps must be >= 1, --warmup/--llm-warmup >= 0")
    if min(args.pp, args.tg, args.tg_prompt) < 1:
        p.error("--pp, --tg and --tg-prompt must be >= 1")
    if not args.skip_llm and not args.gguf:
        p.error("--gguf is required unless --skip-llm")
    return args


def add_site_paths(paths):
    """Put each --site entry (and the wheels in it) at the front of sys.path, in order."""
    added = []
    for path in paths:
        path = os.path.abspath(path)
        entries = [path]
        if os.path.isdir(path):
            entries += sorted(glob.glob(os.path.join(path, "*.whl")))
        added += entries
    sys.path[:0] = added  # before any import of transformers: it checks gguf on import
    return added


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def short_error(e):
    text = f"{type(e).__name__}: {e}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    text = " | ".join(lines[:6])
    return text if len(text) <= 1500 else text[:1500] + " ..."


class Report:
    """Collects the results and rewrites the JSON after every measurement."""

    def __init__(self, path, meta):
        self.path = path
        self.data = {"meta": meta, "gemm": [], "llm": []}

    def add(self, part, entry):
        self.data[part].append(entry)
        self.save()

    def save(self, markdown=None):
        if markdown is not None:
            self.data["markdown"] = markdown
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------- timing


class Clock:
    """Wall time around GPU work: synchronize, then read time.perf_counter()."""

    def __init__(self, torch, device):
        self.torch = torch
        self.cuda = device.type == "cuda"
        self.device = device

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def now(self):
        self.sync()
        return time.perf_counter()


def time_calls(torch, device, fn, inner):
    """Seconds for `inner` back-to-back calls of fn: CUDA events on CUDA, else perf_counter."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- GEMM


def bench_gemm(torch, device, dtype_name, m, n, k, args):
    dtype = {"f32": torch.float32, "f16": torch.float16}[dtype_name]
    gen = torch.Generator(device="cpu").manual_seed(1234)
    a = (torch.rand(m, k, generator=gen) * 2 - 1).to(device=device, dtype=dtype)
    b = (torch.rand(n, k, generator=gen) * 2 - 1).to(device=device, dtype=dtype)
    c = torch.empty(m, n, device=device, dtype=dtype)
    bt = b.t()

    def call():
        torch.mm(a, bt, out=c)

    for _ in range(args.warmup):
        call()
    # Choose `inner` from a probe of a few calls, so a sample is >= --min-sample-ms.
    probe_calls = 3
    probe = time_calls(torch, device, call, probe_calls) / probe_calls
    inner = max(1, min(10000, math.ceil(args.min_sample_ms / 1e3 / max(probe, 1e-9))))
    samples = [time_calls(torch, device, call, inner) / inner for _ in range(args.reps)]
    sec = statistics.median(samples)
    flops = 2.0 * m * n * k
    nbytes = (m * k + n * k + m * n) * a.element_size()
    graph = {}
    if device.type == "cuda" and not args.no_graph:
        try:
            gsamples = graph_samples(torch, call, inner, args.reps)
            gsec = statistics.median(gsamples)
            graph = {
                "graph_seconds": gsamples,
                "graph_median_s": gsec,
                "graph_gflops": flops / gsec / 1e9,
                "graph_gbytes_per_s": nbytes / gsec / 1e9,
            }
        except Exception as e:
            graph = {"graph_error": short_error(e)}

    # Sanity check of the result against a float64 product on a few rows (not timed).
    rows = min(m, 4)
    ref = a[:rows].double() @ b.double().t()
    err = (c[:rows].double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
    del a, b, c, bt, ref
    return {
        "dtype": dtype_name,
        "m": m,
        "n": n,
        "k": k,
        "inner": inner,
        "seconds": samples,
        "median_s": sec,
        "gflops": flops / sec / 1e9,
        "gbytes_per_s": nbytes / sec / 1e9,
        "max_rel_err_vs_f64": err,
        **graph,
    }


def graph_samples(torch, call, inner, reps):
    """Per-call seconds of `inner` calls captured in one CUDA graph and replayed: the kernels
    back to back without the host's launch overhead."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up on a side stream, as capture wants
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            call()
    graph.replay()
    torch.cuda.synchronize()
    samples = [time_calls(torch, torch.device("cuda"), graph.replay, 1) / inner for _ in range(reps)]
    del graph
    return samples


def run_gemm(torch, device, args, report):
    for dtype_name in args.dtypes:
        for m, n, k in args.gemm_sizes:
            label = f"gemm {dtype_name} {m}x{n}x{k}"
            try:
                r = bench_gemm(torch, device, dtype_name, m, n, k, args)
                log(f"{label}: {r['median_s'] * 1e6:.1f} us, {r['gflops']:.1f} GFLOP/s, "
                    f"{r['gbytes_per_s']:.1f} GB/s (inner {r['inner']})"
                    + (f"; CUDA graph {r['graph_median_s'] * 1e6:.1f} us, {r['graph_gflops']:.1f} GFLOP/s"
                       if "graph_median_s" in r else "")
                    + (f"; CUDA graph failed: {r['graph_error']}" if "graph_error" in r else ""))
            except Exception as e:  # an OOM or unsupported dtype: record and go on
                r = {"dtype": dtype_name, "m": m, "n": n, "k": k, "error": short_error(e)}
                log(f"{label}: failed: {r['error']}")
            report.add("gemm", r)
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------- LLM


def new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def load_model(torch, device, dtype, args):
    from transformers import AutoModelForCausalLM

    directory, name = os.path.split(os.path.abspath(args.gguf))
    kwargs = {}
    try:
        # Newer transformers can keep GGUF weights packed (GgufLinear, through a hub kernel);
        # ask for the plain dense model, the peer this script means to measure.
        from transformers import GgufConfig

        if "dequantize" in inspect.signature(GgufConfig.__init__).parameters:
            kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize GGUF weights
        pass
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype, **kwargs)
    if args.layers is not None:
        model.model.layers = model.model.layers[: args.layers]
        model.config.num_hidden_layers = len(model.model.layers)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[: args.layers]
    if next(model.parameters()).dtype != dtype:  # a transformers that ignored `dtype`
        model = model.to(dtype)
    model = model.to(device).eval()
    load_s = time.perf_counter() - t0
    return model, load_s


def measure_llm(torch, device, model, args, clock, entry):
    """pp and tg of `model` as it is now (eager, or with a compiled forward)."""
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (1, max(args.pp, args.tg_prompt)), generator=gen)
    pp_ids = ids[:, : args.pp].to(device)
    tg_ids = ids[:, : args.tg_prompt].to(device)
    tg_mask = torch.ones_like(tg_ids)
    pad = model.config.eos_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    if pad is None:
        pad = 0

    def pp_run():
        t0 = clock.now()
        model(pp_ids, past_key_values=new_cache(model), use_cache=True, logits_to_keep=1)
        return clock.now() - t0

    def generate_run():
        t0 = clock.now()
        out = model.generate(
            input_ids=tg_ids,
            attention_mask=tg_mask,
            max_new_tokens=args.tg,
            min_new_tokens=args.tg,
            do_sample=False,
            pad_token_id=pad,
        )
        sec = clock.now() - t0
        new = out.shape[1] - tg_ids.shape[1]
        if new != args.tg:
            raise RuntimeError(f"generate produced {new} tokens, not {args.tg}")
        return sec

    def loop_run():
        cache = new_cache(model)
        out = model(tg_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        t0 = clock.now()
        for _ in range(args.tg):
            out = model(tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1:].argmax(-1)
        return clock.now() - t0

    tests = [
        (f"pp{args.pp}", pp_run, args.pp, args.reps),
        (f"tg{args.tg}_generate", generate_run, args.tg, args.tg_reps),
        (f"tg{args.tg}_loop", loop_run, args.tg, args.tg_reps),
    ]
    with torch.inference_mode():
        for name, fn, tokens, reps in tests:
            label = f"llm {entry['dtype']} {entry['mode']} {name}"
            try:
                warm = [fn() for _ in range(args.llm_warmup)]
                secs = [fn() for _ in range(reps)]
            except Exception as e:
                entry["tests"][name] = {"error": short_error(e)}
                log(f"{label}: failed: {entry['tests'][name]['error']}")
                if entry["mode"] == "compile":
                    log(traceback.format_exc(limit=3))
                continue
            rates = [tokens / s for s in secs]
            entry["tests"][name] = {
                "tokens": tokens,
                "seconds": secs,
                "warmup_seconds": warm,
                "tok_per_s": rates,
                "median_tok_per_s": statistics.median(rates),
            }
            log(f"{label}: {statistics.median(rates):.1f} tok/s "
                f"(warm-up runs {', '.join(f'{w:.2f}' for w in warm)} s)")


def dynamo_counters(torch):
    """A compact copy of torch._dynamo's counters (graphs, graph breaks, recompiles)."""
    try:
        from torch._dynamo.utils import counters

        out = {}
        for group in ("stats", "recompiles", "frames"):
            if counters.get(group):
                out[group] = {str(k): v for k, v in counters[group].items()}
        if counters.get("graph_break"):
            breaks = counters["graph_break"]
            out["graph_breaks"] = sum(breaks.values())
            out["graph_break_reasons"] = [str(k)[:300] for k in list(breaks)[:10]]
        return out
    except Exception as e:
        return {"error": short_error(e)}


def run_llm(torch, device, args, report):
    clock = Clock(torch, device)
    for dtype_name in args.dtypes:
        dtype = {"f32": torch.float32, "f16": torch.float16}[dtype_name]
        try:
            model, load_s = load_model(torch, device, dtype, args)
        except Exception as e:
            err = short_error(e)
            log(f"llm {dtype_name}: load failed: {err}")
            for mode in args.modes:
                report.add("llm", {"dtype": dtype_name, "mode": mode, "error": f"load: {err}", "tests": {}})
            continue
        modules = {}
        for mod in model.modules():
            modules[type(mod).__name__] = modules.get(type(mod).__name__, 0) + 1
        param_dtypes = sorted({str(p.dtype) for p in model.parameters()})
        info = {
            "load_s": load_s,
            "linear_modules": {k: v for k, v in modules.items() if "linear" in k.lower() or "gguf" in k.lower()},
            "param_dtypes": param_dtypes,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "num_hidden_layers": model.config.num_hidden_layers,
            "vocab_size": model.config.vocab_size,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        }
        log(f"llm {dtype_name}: loaded in {load_s:.1f} s ({info['param_bytes'] / 1e6:.0f} MB of "
            f"parameters, attention {info['attn_implementation']})")
        for mode in args.modes:
            entry = {"dtype": dtype_name, "mode": mode, "tests": {}, **info}
            if mode == "compile":
                try:
                    import torch._dynamo

                    torch._dynamo.reset()
                    model.forward = torch.compile(model.forward)
                except Exception as e:
                    entry["error"] = f"torch.compile: {short_error(e)}"
                    log(f"llm {dtype_name} compile: {entry['error']}")
                    report.add("llm", entry)
                    continue
            measure_llm(torch, device, model, args, clock, entry)
            if mode == "compile":
                entry["dynamo_counters"] = dynamo_counters(torch)
                errors = [t["error"] for t in entry["tests"].values() if "error" in t]
                if errors:
                    entry["error"] = errors[0]
                del model.forward  # back to the class's eager forward
                torch._dynamo.reset()
            report.add("llm", entry)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------- report


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def render(data, args):
    meta = data["meta"]
    lines = [
        f"GPU peers ({meta['date']})",
        "",
        f"- device: {meta['device_name']} ({meta['device']}); {meta.get('device_detail', '')}".rstrip("; "),
        "- versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- matmul settings: {meta['matmul_settings']}",
    ]
    if data["gemm"]:
        lines += [
            "",
            f"GEMM C = A @ B^T via `torch.mm` (median of {args.reps} samples, each >= "
            f"{args.min_sample_ms:g} ms of back-to-back calls)",
            "",
            "| M × N × K | dtype | time (µs) | GFLOP/s | GB/s | graph time (µs) | graph GFLOP/s "
            "| graph GB/s | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in data["gemm"]:
            size = f"{r['m']} × {r['n']} × {r['k']}"
            if "error" in r:
                lines.append(f"| {size} | {r['dtype']} | – | – | – | – | – | – | {r['error'][:120]} |")
                continue
            gt = r.get("graph_median_s")
            note = r.get("graph_error", "").replace("|", "/")[:120]
            lines.append(
                f"| {size} | {r['dtype']} | {fmt(r['median_s'] * 1e6)} | {fmt(r['gflops'])} "
                f"| {fmt(r['gbytes_per_s'])} | {fmt(gt * 1e6 if gt else None)} "
                f"| {fmt(r.get('graph_gflops'))} | {fmt(r.get('graph_gbytes_per_s'))} | {note} |"
            )
        lines.append("")
        lines.append(
            "time, GFLOP/s, GB/s: eager calls launched back to back (host launch cost included "
            "where it exceeds the kernel's); graph: the same calls captured in one CUDA graph "
            "and replayed (kernels only); GB/s counts A, B and C once."
        )
    if data["llm"]:
        pp, tg = f"pp{args.pp}", f"tg{args.tg}"
        lines += [
            "",
            f"SmolLM2 via transformers, tok/s ({meta.get('model', '?')}; {pp}: median of "
            f"{args.reps}; {tg}: median of {args.tg_reps}, after a {args.tg_prompt}-token prompt; "
            f"generate = {args.tg} / time of `generate` including its prompt forward, loop = "
            f"{args.tg} single-token forwards only)",
            "",
            f"| dtype | mode | {pp} | {tg} generate | {tg} loop | note |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in data["llm"]:
            t = r["tests"]

            def med(name):
                return t.get(name, {}).get("median_tok_per_s")

            note = r.get("error", "")
            if not note:
                note = "; ".join(f"{k}: {v['error']}" for k, v in t.items() if "error" in v)
            if r["mode"] == "compile" and not note:
                first = t.get(pp, {}).get("warmup_seconds") or []
                if first:
                    note = f"first {pp} call (compiling) {first[0]:.1f} s"
            note = note.replace("|", "/")[:160]
            lines.append(
                f"| {r['dtype']} | {r['mode']} | {fmt(med(pp))} | {fmt(med(tg + '_generate'))} "
                f"| {fmt(med(tg + '_loop'))} | {note} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    site_added = add_site_paths(args.site)
    # Everything is local; never wait on the network (the GPU machine has none).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import numpy as np
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available (use --device cpu for a smoke test)")

    # True f32 GEMMs (no TF32), for the GEMM and the f32 model alike.
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
    except Exception as e:  # not expected; recorded below through the read-back
        log(f"could not set allow_tf32: {e}")

    def setting(fn):
        try:
            return fn()
        except Exception as e:
            return f"? ({type(e).__name__})"

    matmul_settings = {
        "cuda.matmul.allow_tf32": setting(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cuda.matmul.allow_fp16_reduced_precision_reduction": setting(
            lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        ),
        "float32_matmul_precision": setting(torch.get_float32_matmul_precision),
    }

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch build)": torch.version.cuda,
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        device_name = torch.cuda.get_device_name(device)
        device_detail = (
            f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.1f} GiB"
        )
        versions["cudnn"] = torch.backends.cudnn.version()
    else:
        device_name = platform.processor() or platform.machine()
        device_detail = f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"

    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
        "device_name": device_name,
        "device_detail": device_detail,
        "torch_version": torch.__version__,
        "versions": versions,
        "matmul_settings": matmul_settings,
        "site_paths": site_added,
        "args": {k: v for k, v in vars(args).items()},
    }
    if not args.skip_llm:
        meta["model"] = os.path.basename(args.gguf)
        try:
            import transformers

            versions["transformers"] = transformers.__version__
        except Exception as e:
            versions["transformers"] = f"unavailable ({short_error(e)})"
        try:
            import gguf

            versions["gguf"] = f"{getattr(gguf, '__version__', None) or _dist_version('gguf')} " \
                               f"({os.path.dirname(gguf.__file__)})"
        except Exception as e:
            versions["gguf"] = f"unavailable ({short_error(e)})"

    report = Report(args.json, meta)
    report.save()
    log(f"device: {device_name} ({device_detail}); torch {torch.__version__}")

    if not args.skip_gemm:
        run_gemm(torch, device, args, report)
    if not args.skip_llm:
        run_llm(torch, device, args, report)

    table = render(report.data, args)
    report.save(markdown=table)
    print(table)
    if args.json:
        log(f"wrote {args.json}")


def _dist_version(name):
    try:
        import importlib.metadata

        return importlib.metadata.version(name)
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
