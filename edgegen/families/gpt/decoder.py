"""What the GPT family's decoders share: the model config, the decoder-only module base (the
decoder graph's contract and the loops PyTorch runs it in) and the attention mask. GPT-2's
layers are in model.py, the llama architecture's in llama.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pipeline import ARCHITECTURES   # llama: RMSNorm, rotary positions, grouped-query attention, SwiGLU (llama.py)

GELU_APPROXIMATIONS = ("tanh", "none")   # GPT-2's "gelu_new" is the tanh form


@dataclass
class Config:
    vocab_size: int = 256          # bytes
    block_size: int = 256          # positions the model has embeddings for
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    gelu: str = "tanh"
    layer_norm_eps: float = 1e-5
    train_context: int = 128       # tokens per training window
    architecture: str = "gpt2"
    # the llama architecture's (Llama, Qwen2, Mistral): key/value heads (grouped-query attention;
    # None: n_head), a head size that need not be n_embd / n_head, the SwiGLU width, rotary
    # positions (the inverse frequencies as imported, for the scaled variants; None: rope_theta's
    # default ones), q/k/v biases (Qwen2), and whether the output layer is the token embedding
    n_kv_head: int | None = None
    head_size: int | None = None
    intermediate_size: int | None = None
    rope_theta: float = 10000.0
    rope_inv_freq: list | None = None
    rope_attention_scaling: float = 1.0
    qkv_bias: bool = False
    tie_embeddings: bool = True

    def validate(self) -> list[str]:
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "train_context"):
            if getattr(self, name) < 1:
                problems.append(f"{name} expected positive, found {getattr(self, name)}")
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture expected one of {ARCHITECTURES}, found {self.architecture!r}")
        if self.head_size is None and self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd expected a multiple of n_head ({self.n_head}), found {self.n_embd}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            problems.append(f"n_kv_head expected a divisor of n_head ({self.n_head}), found {self.n_kv_head}")
        llama_only = [name for name in ("n_kv_head", "head_size") if getattr(self, name) is not None]
        if self.architecture == "gpt2" and llama_only:   # --n-kv-head without --architecture llama
            problems.append(f"{' and '.join(llama_only)} expected only with architecture 'llama', found "
                            f"{'them' if len(llama_only) > 1 else 'it'} with 'gpt2'")
        if self.architecture == "llama" and self.n_head >= 1 and self.head_dim % 2:
            problems.append(f"head size expected even (rotary positions turn pairs), found {self.head_dim}")
        if self.rope_inv_freq is not None and self.n_head >= 1 and len(self.rope_inv_freq) != self.head_dim // 2:
            problems.append(f"rope_inv_freq expected {self.head_dim // 2} frequencies (half the head size), "
                            f"found {len(self.rope_inv_freq)}")
        if self.gelu not in GELU_APPROXIMATIONS:
            problems.append(f"gelu expected one of {GELU_APPROXIMATIONS}, found {self.gelu!r}")
        if self.train_context > self.block_size:
            problems.append(f"train_context expected at most block_size ({self.block_size}), found {self.train_context}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout expected in [0, 1), found {self.dropout}")
        return problems

    @property
    def head_dim(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """The heads of the KV cache: n_kv_head with grouped-query attention, else n_head."""
        return self.n_kv_head or self.n_head


def attention_bias(attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """[batch, 1, query, total] additive bias: 0 where a query may look (causal, and not at
    padding), the dtype's lowest value elsewhere. Finite on purpose: a left-padding query
    row sees only padding, and -inf there would put NaN into every later layer."""
    total = attention_mask.shape[1]
    key_pos = torch.arange(total, device=attention_mask.device)
    query_pos = torch.arange(query_length, device=attention_mask.device) + (total - query_length)
    causal = key_pos[None, :] <= query_pos[:, None]
    allowed = causal[None, None] & (attention_mask[:, None, None, :] > 0)
    lowest = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, torch.zeros((), dtype=dtype), lowest)


class DecoderLM(nn.Module):
    """What every decoder-only model here shares beside its layers: forward(input_ids,
    position_ids, attention_mask, *past) -> (logits, *present), the decoder graph's contract."""

    config: Config

    def empty_past(self, batch: int) -> list[torch.Tensor]:
        c = self.config
        return [torch.zeros(batch, c.kv_heads, 0, c.head_dim) for _ in range(2 * c.n_layer)]

    @torch.inference_mode()
    def greedy_cached(self, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy continuation of equal-length prompts [b, t] with this module's own KV cache: the
        PyTorch eager loop `edgegen bench --vs-torch` times a token package against."""
        b, t = prompts.shape
        ids, positions, past, made = prompts, torch.arange(t).expand(b, t), self.empty_past(b), []
        for i in range(new_tokens):
            out = self(ids, positions, torch.ones(b, t + i, dtype=torch.int64), *past)
            ids, past = out[0][:, -1:].argmax(-1), out[1:]
            positions = torch.full((b, 1), t + i)
            made.append(ids)
        return torch.cat(made, dim=1)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over windows [batch, context + 1]."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        b, t = inputs.shape
        positions = torch.arange(t).expand(b, t)
        logits = self(inputs, positions, torch.ones_like(inputs), *self.empty_past(b))[0]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.inference_mode()
    def greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """The reference loop: re-run the whole sequence for every token, take the argmax."""
        ids = list(prompt)
        for _ in range(max_new_tokens):
            x = torch.tensor([ids])
            logits = self(x, torch.arange(len(ids))[None], torch.ones_like(x), *self.empty_past(1))[0]
            ids.append(int(logits[0, -1].argmax()))
        return ids[len(prompt):]
