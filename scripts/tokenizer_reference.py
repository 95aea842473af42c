#!/usr/bin/env python3
"""Reference tokenizations for Kiln's tokenizer (runtime/src/tokenizer), from Hugging Face
transformers, cross-checked with llama.cpp and SentencePiece where they are installed.

What it writes:

* tests/fixtures/tokenizer_smollm2.json: a varied corpus (whitespace, digits, punctuation,
  emoji, CJK, Arabic, Hindi, NFC/NFD accents, code, URLs, special tokens inside text, ...) with,
  per string, the ids of the SmolLM2 tokenizer built from the GGUF file (with and without
  `add_special_tokens`), `decode(ids)` with and without `skip_special_tokens`; and the chat
  template rendered for three conversations, with and without the generation prompt, and the ids
  of each rendering. Checked by runtime/tests/tokenizer_parity.rs.
* tests/fixtures/smollm2_tokenizer/{tokenizer.json,tokenizer_config.json}: the same tokenizer
  saved by transformers, for `Tokenizer::from_file`.
* runtime/src/tokenizer/testdata/tiny_spm.gguf and tiny_spm.json: a SentencePiece BPE model
  with byte fallback (the Llama 2 / Mistral / TinyLlama kind, `tokenizer.ggml.model = "llama"`),
  trained here on a small corpus so it is tiny, written as a tokenizer-only GGUF the way llama.cpp's
  converter writes a SentencePiece vocabulary, and the ids transformers gives for it when built
  from that GGUF. Checked by the unit tests in runtime/src/tokenizer/gguf.rs.

One deliberate departure from transformers. For `tokenizer.ggml.pre = "smollm"` transformers'
GGUF loader (5.x) knows no split regex and falls back to plain GPT-2 byte-level splitting, while
SmolLM2's own tokenizer.json and llama.cpp split every digit off first (`Digits(individual_digits)`
then byte-level GPT-2 splitting). The two differ on whitespace before digits ("a  1", "a\\n\\n1").
Kiln follows the model's own tokenizer and llama.cpp, so the reference here is transformers'
tokenizer with that pre-tokenizer put back; the ids of unpatched transformers are recorded
under `transformers_gguf_ids` where they differ, and llama.cpp's (when `llama_cpp` is importable)
are compared and the disagreements printed and recorded under `llama_cpp_ids`.

Run: /opt/kiln-venv/bin/python scripts/tokenizer_reference.py
(needs transformers, tokenizers, gguf; optionally llama-cpp-python and sentencepiece, which can be
installed to a side folder and put on PYTHONPATH.)
"""
import json
import os
import pathlib
import sys
import tempfile
import unicodedata

from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
GGUF_CANDIDATES = [
    ROOT / "tests/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    pathlib.Path("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
]


def corpus():
    """The strings to tokenize: each category on purpose, then some combinations."""
    s = []
    # Empty and whitespace.
    s += ["", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\n\n\n", " \n ", "\t\t", " \t \n",
          "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a \n b", "a\r\nb",
          " leading", "  two leading", "trailing ", "trailing  ", " both ", "\tindent",
          "line1\nline2\nline3", "para1\n\n\npara2", "ends with newline\n", "x" + " " * 17 + "y",
          "  \n  \n", "word\u00a0nbsp", "thin\u2009space", "ideographic\u3000space",
          "a \u200b zero width"]
    # Digits and numbers.
    s += ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "-273.15", "1e-9",
          "1,000,000", "$1,234.56", "100%", "2024-01-31", "12:34:56", "+1 (555) 123-4567",
          "a  1", "a\n\n1", "x1y2z3", "v1.2.3-rc4", "0xDEADBEEF", "0b1011", "1st 2nd 3rd 4th",
          " 99 bottles", "a 1 b 22 c 333", "9" * 40, "3 + 4 = 7", "½ ¾ ⅓", "٣٤٥", "१२३", "１２３"]
    # Punctuation and symbols.
    s += ["Hello, world!", "Wait... what?!", "\"quoted\" and 'single'", "it's", "don't", "I'M",
          "we'll they've you're he'd", "(parens) [brackets] {braces} <angles>", "a--b---c",
          "—em dash— –en dash–", "«guillemets» „low“", "#hashtag @mention", "foo_bar-baz.qux",
          "!!!", "???", "...", "…", "~`!@#$%^&*()_+-=[]{}|;':\",./<>?", "\\backslash\\",
          "©®™ §¶ †‡ •", "→ ← ↑ ↓ ⇒ ∀x∈ℝ: x²≥0", "∑_{i=1}^n i = n(n+1)/2", "°C °F µs Ω"]
    # Emoji, ZWJ sequences, flags, skin tones.
    s += ["😀", "😀😃😄", "I ❤️ Rust", "👍🏽", "👨‍👩‍👧‍👦", "🧑‍💻 coding", "🏳️‍🌈", "🇫🇷🇯🇵🇺🇸",
          "🇬🇧 flag", "emoji at end 🎉", "🎉 emoji at start", "mixed😀text😀", "⌚⌛", "✔️✅❌",
          "👩🏾‍🚀", "🫠🫡", "1️⃣2️⃣3️⃣", "©️"]
    # Scripts.
    s += ["你好，世界！", "机器学习是人工智能的一个分支。", "日本語のテキストです。", "カタカナとひらがな",
          "한국어 텍스트입니다", "مرحبا بالعالم", "اللغة العربية جميلة", "नमस्ते दुनिया",
          "हिन्दी में लिखा गया पाठ", "Привет, мир!", "Ελληνικά γράμματα", "עברית מימין לשמאל",
          "ภาษาไทย", "Tiếng Việt có dấu", "Türkçe İstanbul ığdır", "Ångström Øre Æsir",
          "Straße Maß", "ĳ ﬁ ﬂ ligatures", "English 中文 mixed العربية text",
          "ⓒⓘⓡⓒⓛⓔⓓ", "𝔣𝔯𝔞𝔨𝔱𝔲𝔯 𝕕𝕠𝕦𝕓𝕝𝕖", "𐍈 gothic", "ᚠᚢᚦ runes"]
    # Accents, NFC and NFD.
    for w in ["café", "naïve", "résumé", "Éléphant", "crème brûlée", "São Paulo", "Ñandú",
              "Zürich", "Dvořák", "Łódź"]:
        s.append(unicodedata.normalize("NFC", w))
        s.append(unicodedata.normalize("NFD", w))
    s += ["e\u0301\u0302\u0303 stacked", "a\u0308\u0308"]
    # Code.
    s += [
        "def f(x):\n    return x * 2\n",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "const add = (a, b) => a + b;\nconsole.log(add(1, 2));",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)",
        "    indented with spaces\n        more\n",
        "x = {'a': 1, \"b\": 2}  # comment",
        "$ cargo test -p kiln-runtime -- --nocapture",
        "if (a && b || !c) { x <<= 2; y >>= 3; z ^= ~w; }",
        "\\documentclass{article}\n\\begin{equation} E = mc^2 \\end{equation}",
        "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {}",
        "public static void main(String[] args) { System.out.println(\"hi\"); }",
        "let v: Vec<Option<&'static str>> = vec![None; 3];",
        "    \n\t\n  mixed indentation\n",
        "```python\nprint('fenced')\n```",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "key: value\nlist:\n  - one\n  - two\n",
    ]
    # URLs, paths, e-mail.
    s += ["https://example.com/path?query=1&x=%20y#frag", "http://localhost:8080/api/v1/items",
          "ftp://files.example.org/pub/file.tar.gz", "mailto:someone@example.com",
          "user.name+tag@sub.domain.co.uk", "C:\\Users\\Name\\Documents\\file.txt",
          "/usr/local/bin/python3", "~/.config/kiln/settings.toml", "www.example.com",
          "git@github.com:owner/repo.git"]
    # Special tokens inside text.
    s += ["<|im_start|>user\nhi<|im_end|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
          "text<|endoftext|>more text", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
          "<|im_start|><|im_end|>", " <|im_start|> spaced <|im_end|> ", "<|im_start", "im_end|>",
          "<|IM_START|>", "<repo_name>kiln<file_sep>src/lib.rs", "<filename>main.py\n<gh_stars>100",
          "<jupyter_code>print(1)<jupyter_output>1", "<|im_start|>user\n<|im_start|>nested<|im_end|>"]
    # Long words and repetitions.
    s += ["antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
          "Donaudampfschifffahrtsgesellschaftskapitän", "a" * 100, "ab" * 60, " " * 64, "\n" * 20,
          "-" * 80, "=" * 33, "ha" * 25 + "!", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "😀" * 12,
          "中" * 30, "hello " * 20, "The quick brown fox jumps over the lazy dog. " * 5,
          "Supercalifragilisticexpialidocious" * 3, "x" * 500]
    # Ordinary sentences.
    s += [
        "The quick brown fox jumps over the lazy dog.",
        "Kiln is a neural-network compiler written in Rust.",
        "What is the capital of France? The capital of France is Paris.",
        "She said, \"I'll be there at 5 p.m.\" and left.",
        "Mr. and Mrs. Smith's children's toys weren't cheap.",
        "In 1969, Apollo 11 landed on the Moon; 600 million people watched.",
        "Hello\nWorld", "HELLO WORLD", "hello world", "Hello World", "hElLo WoRlD",
        "e.g. i.e. etc. vs.", "U.S.A. and U.K.", "O'Brien's café", "rock 'n' roll",
    ]
    # Combinations: sentences with a category mixed in.
    extras = ["12", "😀", "中文", "  ", "\n", "café", "<|im_end|>", "!!"]
    for i, e in enumerate(extras):
        s.append(f"before {e} after")
        s.append(f"{e}start and end{e}")
        s.append(f"x{i}{e}{e}y")
    # Control characters and odd code points.
    s += ["\x00", "a\x01b\x7fc", "\x1b[31mred\x1b[0m", "\ufeffBOM", "\ufffd replacement",
          "\u2028line sep\u2029", "\U0010ffff", "\ue000 private use"]
    return s


CONVERSATIONS = [
    [{"role": "system", "content": "You are Kiln, a concise assistant."},
     {"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "Write a haiku about compilers.\nMake it rhyme."}],
    [{"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Tell me a joke about café 😀 and 中文."}],
]


# Templates in the style of popular models' (Llama 3, Mistral, Qwen), to check the template
# engine against Jinja2 as transformers sets it up (whitespace control, trim_blocks/lstrip_blocks,
# namespace, slicing, filters, Python string methods, tojson, raise_exception). Rendered through
# transformers' own `render_jinja_template`.
EXTRA_TEMPLATES = {
    "llama3_style": """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
""",
    "mistral_style": """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
""",
    "qwen_style": """{% set ns = namespace(count=0, last_user=-1) %}
{% for m in messages %}
  {% if m.role == 'user' %}{% set ns.count = ns.count + 1 %}{% set ns.last_user = loop.index0 %}{% endif %}
{% endfor %}
{% for m in messages %}
<|im_start|>{{ m.role }}
{{ m.content.strip() }}{% if not loop.last %}<|im_end|>
{% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_end|>
<|im_start|>assistant
{% endif %}
users={{ ns.count }} last={{ ns.last_user }} json={{ messages[-1] | tojson }}
pretty={{ {'n': ns.count, 'roles': messages | map(attribute='role') | list} | tojson(indent=2) }}
{{ messages | length }} {{ "Title case".lower().title() }} {{ messages[0].content[:5] }}{{ '|' if messages[0].content.startswith('You') else '-' }}
{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.content | length }}{% if loop.last %}.{% else %},{% endif %}{% endfor %}
""",
}

EXTRA_CONVERSATIONS = CONVERSATIONS + [
    [{"role": "user", "content": "  padded question?  \n"}],
    [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Not allowed."}],
]


def extra_templates():
    from transformers.utils.chat_template_utils import render_jinja_template

    out = []
    for name, source in EXTRA_TEMPLATES.items():
        renderings = []
        for conv in EXTRA_CONVERSATIONS:
            for gen in (False, True):
                entry = {"messages": conv, "add_generation_prompt": gen}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[conv], chat_template=source, add_generation_prompt=gen,
                        bos_token="<s>", eos_token="</s>")
                    entry["rendered"] = rendered[0]
                except Exception as e:  # raise_exception: jinja2's TemplateError
                    entry["error"] = str(e)
                renderings.append(entry)
        out.append({"name": name, "source": source, "bos_token": "<s>", "eos_token": "</s>",
                    "renderings": renderings})
    return out


def gguf_path():
    for p in GGUF_CANDIDATES:
        if p.exists():
            return p
    sys.exit("no SmolLM2 GGUF at " + " or ".join(map(str, GGUF_CANDIDATES)))


def smollm_pre_tokenizer():
    """SmolLM2's own tokenizer.json pre-tokenizer (and llama.cpp's `smollm` split)."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def try_llama_cpp(path):
    try:
        import llama_cpp
    except ImportError:
        print("llama_cpp not importable: no llama.cpp cross-check")
        return None
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def smollm2():
    path = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    raw = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.backend_tokenizer.pre_tokenizer = smollm_pre_tokenizer()
    llm = try_llama_cpp(path)

    cases = []
    n_raw_diff = n_cpp_diff = 0
    for text in corpus():
        ids = tok(text, add_special_tokens=True)["input_ids"]
        plain = tok(text, add_special_tokens=False)["input_ids"]
        case = {
            "text": text,
            "ids": ids,
            "ids_no_special": plain,
            "decoded": tok.decode(ids),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        }
        raw_ids = raw(text, add_special_tokens=True)["input_ids"]
        if raw_ids != ids:
            n_raw_diff += 1
            case["transformers_gguf_ids"] = raw_ids
        if llm is not None:
            cpp = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if cpp != ids:
                n_cpp_diff += 1
                case["llama_cpp_ids"] = cpp
                print(f"llama.cpp differs on {text!r}: {cpp} vs {ids}")
        cases.append(case)

    chats = []
    for conv in CONVERSATIONS:
        for gen in (False, True):
            text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            chats.append({
                "messages": conv,
                "add_generation_prompt": gen,
                "rendered": text,
                "ids": tok(text, add_special_tokens=False)["input_ids"],
            })

    out = {
        "source": "scripts/tokenizer_reference.py",
        "model": path.name,
        "transformers_pre_tokenizer_patched": "Digits(individual_digits=True) + ByteLevel",
        "unpatched_transformers_differs_on": n_raw_diff,
        "llama_cpp_checked": llm is not None,
        "llama_cpp_differs_on": n_cpp_diff if llm is not None else None,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "cases": cases,
        "chat": chats,
        "extra_templates": extra_templates(),
    }
    dest = ROOT / "tests/fixtures/tokenizer_smollm2.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{dest}: {len(cases)} strings, {len(chats)} chat renderings; unpatched transformers "
          f"differs on {n_raw_diff}; llama.cpp differs on {n_cpp_diff if llm else 'n/a'}")

    # The tokenizer as transformers saves it, for `Tokenizer::from_file`; compact JSON (the same
    # tokenizer in fewer bytes), kept only while it is under 3 MB.
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        saved = json.loads((pathlib.Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
        compact = json.dumps(saved, ensure_ascii=False, separators=(",", ":")) + "\n"
        size = len(compact.encode("utf-8"))
        if size < 3 * 1024 * 1024:
            sdir = ROOT / "tests/fixtures/smollm2_tokenizer"
            sdir.mkdir(parents=True, exist_ok=True)
            (sdir / "tokenizer.json").write_text(compact, encoding="utf-8")
            config = json.loads((pathlib.Path(tmp) / "tokenizer_config.json").read_text(encoding="utf-8"))
            if "chat_template" not in config:
                jinja = pathlib.Path(tmp) / "chat_template.jinja"
                if jinja.exists():
                    config["chat_template"] = jinja.read_text(encoding="utf-8")
            (sdir / "tokenizer_config.json").write_text(
                json.dumps(config, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            print(f"{sdir}: tokenizer.json ({size} bytes) and tokenizer_config.json")
        else:
            print(f"tokenizer.json is {size} bytes compact: not saved")


# --- SentencePiece ("llama") reference -------------------------------------------------------

SPM_TRAIN_TEXT = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Compilers translate programs written in one language into another language, usually machine code.
Neural networks are trained with gradient descent; the loss goes down, and the model improves.
In the beginning there was nothing, and then there were tokens, pieces of words and bytes.
Hello world! Hello there. How are you today? I am fine, thank you very much for asking.
Rust is a systems programming language focused on safety, speed, and concurrency.
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
Numbers like 1, 2, 3, 10, 42, 100 and 2024 appear in text, as do dates such as 2024-01-31.
def main(): return 0 # Python code with indentation and colons
fn main() { println!("hi"); } // Rust code with braces and semicolons
Café, naïve, résumé: accented words appear in English text borrowed from French.
"""


def tiny_spm():
    try:
        import sentencepiece as spm
    except ImportError:
        print("sentencepiece not importable: tiny_spm fixture not (re)made")
        return
    import gguf
    from gguf import GGUFWriter

    testdata = ROOT / "runtime/src/tokenizer/testdata"
    testdata.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train = pathlib.Path(tmp) / "train.txt"
        lines = SPM_TRAIN_TEXT.splitlines() * 3
        train.write_text("\n".join(lines) + "\n", encoding="utf-8")
        prefix = str(pathlib.Path(tmp) / "tiny")
        # The options Llama 2's tokenizer was trained with, at a toy size.
        spm.SentencePieceTrainer.train(
            input=str(train), model_prefix=prefix, model_type="bpe", vocab_size=400,
            byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity",
            add_dummy_prefix=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
            pad_id=-1, user_defined_symbols=["<|user|>"], minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

        # As llama.cpp's converter (_create_vocab_sentencepiece) writes a vocabulary.
        tokens, scores, types = [], [], []
        for i in range(sp.vocab_size()):
            tokens.append(sp.id_to_piece(i))
            scores.append(sp.get_score(i))
            t = gguf.TokenType.NORMAL
            if sp.is_unknown(i):
                t = gguf.TokenType.UNKNOWN
            elif sp.is_control(i):
                t = gguf.TokenType.CONTROL
            elif sp.is_unused(i):
                t = gguf.TokenType.UNUSED
            elif sp.is_byte(i):
                t = gguf.TokenType.BYTE
            elif tokens[-1] == "<|user|>":
                t = gguf.TokenType.USER_DEFINED
            types.append(int(t))

        path = testdata / "tiny_spm.gguf"
        w = GGUFWriter(str(path), "llama")
        w.add_block_count(1)
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_feed_forward_length(16)
        w.add_head_count(2)
        w.add_head_count_kv(2)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(len(tokens))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(True)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        # transformers' own GGUF path, as from_pretrained takes it for the tokenizer...
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
        from transformers import TokenizersBackend

        arch, tdict, tconfig = get_gguf_tokenizer(str(path))
        backend, _ = convert_gguf_tokenizer(arch, tdict)
        metaspace = TokenizersBackend(tokenizer_object=backend, **tconfig)
        # ...with the space prefix done as Llama 2's own tokenizer.json does it (a Prepend("▁") +
        # Replace(" ", "▁") normalizer instead of Metaspace(prepend_scheme="first")): that is what
        # SentencePiece and llama.cpp do for text starting with a space and after special tokens.
        backend, _ = convert_gguf_tokenizer(arch, tdict)
        backend.normalizer = normalizers.Sequence(
            [normalizers.Prepend(prepend="\u2581"), normalizers.Replace(pattern=" ", content="\u2581")])
        backend.pre_tokenizer = None
        tok = TokenizersBackend(tokenizer_object=backend, **tconfig)
        llm = try_llama_cpp(path)

        texts = [t for t in corpus() if len(t) < 200] + ["Hello world", " Hello", "hello  world",
                                                          "<s>Hello</s>", "<|user|>hi", "a<unk>b"]
        cases = []
        n_sp = n_cpp = n_meta = 0
        for text in texts:
            ids = tok(text, add_special_tokens=True)["input_ids"]
            plain = tok(text, add_special_tokens=False)["input_ids"]
            case = {"text": text, "ids": ids, "ids_no_special": plain,
                    "decoded": tok.decode(ids), "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}
            meta_ids = metaspace(text, add_special_tokens=True)["input_ids"]
            if meta_ids != ids:
                n_meta += 1
                case["transformers_gguf_ids"] = meta_ids
            sp_ids = [1] + sp.encode(text)
            if sp_ids != ids:
                n_sp += 1
                case["sentencepiece_ids"] = sp_ids
            if llm is not None:
                cpp = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
                if cpp != ids:
                    n_cpp += 1
                    case["llama_cpp_ids"] = cpp
                    print(f"llama.cpp differs on {text!r}: {cpp} vs {ids}")
            cases.append(case)
    out = {
        "source": "scripts/tokenizer_reference.py",
        "vocab_size": len(tokens),
        "transformers_metaspace_differs_on": n_meta,
        "sentencepiece_differs_on": n_sp,
        "llama_cpp_differs_on": n_cpp if llm is not None else None,
        "cases": cases,
    }
    (testdata / "tiny_spm.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n",
                                            encoding="utf-8")
    print(f"{path}: {len(tokens)} tokens, {path.stat().st_size} bytes; {len(cases)} strings; "
          f"transformers' Metaspace build differs on {n_meta}, sentencepiece on {n_sp}, llama.cpp on {n_cpp if llm else 'n/a'}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    smollm2()
    tiny_spm()
