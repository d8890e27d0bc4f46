"""A GPT-2-style decoder-only transformer (nanoGPT in spirit): pre-LayerNorm blocks, learned
positions, causal attention through F.scaled_dot_product_attention, tied token embeddings.

One forward serves training, the prompt (prefill) and each new token: it takes the past keys
and values of every layer ([batch, heads, past, head_dim], empty on the first call) and
returns the logits and the grown cache, which is the contract of the exported decoder graph.
The same module holds an imported Hugging Face GPT-2 (see edgegen.families.gpt.hf_import).
This module is the family's torch side (Config, build, Trainer, the defaults): build makes the
config's architecture, this GPT-2 or the llama one (llama.py); what both share is in decoder.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .decoder import Config, DecoderLM, attention_bias
from .llama import Llama

FAMILY = "gpt"
DATA_RANGE = None          # token ids, used as they are
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 32
DEFAULT_LR = 1e-3
DEFAULT_DATA = "stdlib"


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_head, self.head_dim = c.n_head, c.head_dim
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.proj = nn.Linear(c.n_embd, c.n_embd)
        self.dropout = c.dropout

    def forward(self, x, mask, past_key, past_value):
        b, t = mask.shape[0], mask.shape[2]
        # one reshape and one transpose for q, k and v together: fewer nodes in the graph
        q, k, v = self.qkv(x).view(b, t, 3 * self.n_head, self.head_dim).transpose(1, 2).split(self.n_head, dim=1)
        key = torch.cat([past_key, k], dim=2)
        value = torch.cat([past_value, v], dim=2)
        y = F.scaled_dot_product_attention(q, key, value, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b * t, self.n_head * self.head_dim)
        return self.proj(y), key, value


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.attn = Attention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.fc_out = nn.Linear(4 * c.n_embd, c.n_embd)
        self.gelu = c.gelu
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, mask, past_key, past_value):
        a, key, value = self.attn(self.ln_1(x), mask, past_key, past_value)
        x = x + self.drop(a)
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln_2(x)), approximate=self.gelu)))
        return x, key, value


class GPT(DecoderLM):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("attn.proj.weight", "fc_out.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, position_ids, attention_mask, *past):
        """past: past_key_values.0.key, .0.value, .1.key, ... -> (logits, present.0.key, ...)."""
        b, t = input_ids.shape
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))
        mask = attention_bias(attention_mask, t, x.dtype)
        # Hidden states as [batch * tokens, width]: 2-D MatMul + bias is one Gemm in ONNX Runtime
        x = x.reshape(b * t, self.config.n_embd)
        present = []
        for i, block in enumerate(self.blocks):
            x, key, value = block(x, mask, past[2 * i], past[2 * i + 1])
            present += [key, value]
        # the head on [batch, tokens, width]: the graph's last MatMul, which logits_to_keep slices
        logits = F.linear(self.ln_f(x).view(b, t, self.config.n_embd), self.wte.weight)
        return (logits, *present)


def prepare_data(source: str, image_size: int, channels: int | None, seed: int, options: dict | None = None):
    """Byte-level windows of the corpus, and the config they imply (a byte vocabulary)."""
    from ...training.text import load_text

    context = (options or {}).get("train_context", Config.train_context)
    return load_text(source, context), {"vocab_size": 256}


def build(config: Config) -> DecoderLM:
    return Llama(config) if config.architecture == "llama" else GPT(config)


class Trainer:
    """AdamW with warm-up then cosine decay, weight decay on matrices only, clipped gradients."""

    def __init__(self, model: GPT, lr: float, total_steps: int):
        self.model = model
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
        warmup = max(1, total_steps // 20)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))))

    def step(self, tokens: torch.Tensor, labels=None) -> dict[str, float]:
        loss = self.model.loss(tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.item()}
