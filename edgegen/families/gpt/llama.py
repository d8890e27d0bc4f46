"""The llama architecture of the GPT family: the decoder of Llama, Qwen2 and Mistral checkpoints
(imported by hf_import.import_llama) and of Llama-shaped models trained here.

RMSNorm before attention and MLP, rotary positions looked up in the graph by position_ids (one
RotaryEmbedding node per projection from opset 23, its arithmetic at JetPack 6's opset 18),
grouped-query attention (the KV cache holds n_kv_head heads; they are repeated for the query
heads inside the graph), a SwiGLU MLP, and an output layer tied to the token embedding or not.
Module names follow transformers' LlamaForCausalLM (without its "model." prefix), so an
imported state dict loads as it is.

The forward is the decoder graph's contract, the same as GPT-2's: (input_ids, position_ids,
attention_mask, *past) -> (logits, *present), past and present [batch, n_kv_head, seq, head_dim].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...export.onnx_export import export_opset
from .decoder import Config, DecoderLM, attention_bias

ROTARY_OPSET = 23   # ONNX's RotaryEmbedding (and RMSNormalization, Attention) exist from it


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, in float32 (as transformers' LlamaRMSNorm)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary(x, cos, sin, position_ids):
    """x [batch, heads, t, head_dim] turned by its positions' angles, as Llama.rope made them:
    with position_ids, ONNX's RotaryEmbedding over the tables (one node); without, the
    arithmetic over each position's cos and sin."""
    if position_ids is not None:
        return torch.onnx.ops.rotary_embedding(x, cos, sin, position_ids)
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class LlamaAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.kv_heads, c.head_dim
        self.q_proj = nn.Linear(c.n_embd, c.n_head * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.n_embd, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.n_embd, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.n_head * c.head_dim, c.n_embd, bias=False)

    def forward(self, x, mask, cos, sin, position_ids, past_key, past_value):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = rotary(q, cos, sin, position_ids), rotary(k, cos, sin, position_ids)
        key = torch.cat([past_key, k], dim=2)
        value = torch.cat([past_value, v], dim=2)
        # the cache keeps n_kv_head heads, each serving n_head / n_kv_head query heads: attention
        # reads them as they are (ONNX's Attention at opset 23 takes the two head counts)
        y = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, enable_gqa=self.n_head != self.n_kv_head)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim)), key, value


class LlamaMLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        width = c.intermediate_size or 4 * c.n_embd
        self.gate_proj = nn.Linear(c.n_embd, width, bias=False)
        self.up_proj = nn.Linear(c.n_embd, width, bias=False)
        self.down_proj = nn.Linear(width, c.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(c.n_embd, c.layer_norm_eps)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = RMSNorm(c.n_embd, c.layer_norm_eps)
        self.mlp = LlamaMLP(c)

    def forward(self, x, mask, cos, sin, position_ids, past_key, past_value):
        a, key, value = self.self_attn(self.input_layernorm(x), mask, cos, sin, position_ids, past_key, past_value)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), key, value


class Llama(DecoderLM):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.n_embd)
        self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.n_embd, c.layer_norm_eps)
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.n_embd, c.vocab_size, bias=False)
        # (Config.validate checks the imported frequencies' count)
        inv_freq = (torch.tensor(c.rope_inv_freq, dtype=torch.float32) if c.rope_inv_freq is not None else
                    1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        # cos and sin of every position's angles, [block_size, head_dim / 2]: ONNX's RotaryEmbedding
        # (opset 23) looks them up by position_ids
        angles = torch.arange(c.block_size, dtype=torch.float32)[:, None] * inv_freq
        self.register_buffer("rope_cos", angles.cos() * c.rope_attention_scaling, persistent=False)
        self.register_buffer("rope_sin", angles.sin() * c.rope_attention_scaling, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def rope(self, position_ids) -> tuple:
        """(cos, sin, position_ids) for every layer's rotary(), made once per call: in an export at
        opset 23 or later the tables and the ids, for ONNX's RotaryEmbedding; otherwise (PyTorch:
        training and the gate's reference; opsets below 23) each position's cos and sin
        [batch, 1, t, head_dim], and no ids."""
        opset = export_opset()
        if opset is not None and opset >= ROTARY_OPSET:
            return self.rope_cos, self.rope_sin, position_ids
        # the positions first, then doubled: not the whole table per call (a decode step's one row)
        cos, sin = self.rope_cos[position_ids], self.rope_sin[position_ids]
        return torch.cat([cos, cos], dim=-1)[:, None], torch.cat([sin, sin], dim=-1)[:, None], None

    def forward(self, input_ids, position_ids, attention_mask, *past):
        """past: past_key_values.0.key, .0.value, .1.key, ... -> (logits, present.0.key, ...)."""
        t = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        mask = attention_bias(attention_mask, t, x.dtype)
        rope = self.rope(position_ids)
        present = []
        for i, layer in enumerate(self.layers):
            x, key, value = layer(x, mask, *rope, past[2 * i], past[2 * i + 1])
            present += [key, value]
        x = self.norm(x)
        logits = F.linear(x, self.embed_tokens.weight) if self.lm_head is None else self.lm_head(x)
        return (logits, *present)
