"""The GPT family: a decoder-only transformer with a runtime-owned KV-cache loop (GPT-2 imports too)."""

from ...training.text import BUILTIN_TEXT
from .. import DemoModel, Family, Option, register
from .cli import OPTIONS, check_generate, generate
from .pipeline import ARCHITECTURES, GPTConfig, GPTPipeline, held_out_windows


def _limits(config: GPTConfig) -> dict[str, int]:
    return dict.fromkeys(("sequence", "past_sequence_length", "total_sequence_length"), config.block_size)


FAMILY = register(Family(
    name="gpt",
    summary="GPT-2-style decoder-only transformer: KV cache, streaming, top-k/top-p",
    pipeline=GPTPipeline,
    config=GPTConfig,
    graphs=("decoder",),
    onnxruntime_loop="KV-cache loop",
    data="stdlib (default: the Python standard library's source) or a UTF-8 text file",
    builtin_data=BUILTIN_TEXT,
    model="edgegen.families.gpt.model",
    export="edgegen.families.gpt.export",
    options=OPTIONS,
    train_options=(Option("--architecture", "architecture", "gpt2 (LayerNorm, learned positions) or llama (RMSNorm, "
                          "rotary positions, grouped-query attention, SwiGLU)", {"choices": ARCHITECTURES}),
                   Option("--n-kv-head", "n_kv_head", "llama: key/value heads (grouped-query attention; default: "
                          "every query head has its own)", {"type": int}),
                   # the model's size: the defaults (4 x 128, 256 positions) train in minutes on 2 cores
                   Option("--n-layer", "n_layer", "transformer blocks (default: 4)", {"type": int}),
                   Option("--n-head", "n_head", "attention heads, a divisor of --n-embd (default: 4)", {"type": int}),
                   Option("--n-embd", "n_embd", "hidden size (default: 128)", {"type": int}),
                   Option("--block-size", "block_size", "the most positions, prompt and output together, the model "
                          "reads (default: 256)", {"type": int}),
                   Option("--train-context", "train_context", "tokens per training window, at most --block-size "
                          "(default: 128)", {"type": int})),
    generate=generate,
    check_generate=check_generate,
    serving="edgegen.families.gpt.cli:served",
    grid_flags=False,   # one text, picture, clip or set of arrays: no --n, --nrow, --scale
    demo=(DemoModel("gpt-stdlib", "stdlib"),),
    showcase="edgegen.families.gpt.demo",
    bench="tokens",
    held_out_tokens=held_out_windows,
    gate="logits",
    dim_limits=_limits,
    importers=dict.fromkeys(("gpt2", "llama", "qwen2", "mistral"), "edgegen.families.gpt.hf_import:import_transformers"),
    fusion=lambda c: {"model_type": "gpt2", "num_heads": c.n_head, "hidden_size": c.n_embd},
    ort_form="edgegen.families.gpt.cache_in_place",
    smoke={"train": {"steps": 2, "batch_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32,
                     "train_context": 16},
           "generate": ["--prompt", "def ", "--max-new-tokens", "4"], "out": "continuation.txt"},
    order=100,
))
