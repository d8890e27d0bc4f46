"""The demo's showcase of token packages."""

from __future__ import annotations

from ...storage import atomic_write_text

TEXT_PROMPTS = ("def ", "import ", "class ")


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Continuations of a few prompts (temperature 0.8, top-k 40, seed 0)."""
    samples = [prompt + pipe.generate(prompt, max_new_tokens=200, temperature=0.8, top_k=40, seed=0)
               for prompt in TEXT_PROMPTS]
    atomic_write_text(folder / f"{name}_samples.txt", "\n\n----\n\n".join(samples) + "\n")
    lines = ["Continuations from the runtime (temperature 0.8, top-k 40, seed 0; the prompt is the first word):", ""]
    lines += [line for sample in samples for line in ("```python", sample, "```", "")]
    return {"text_samples": samples, "sampling": {"temperature": 0.8, "top_k": 40, "max_new_tokens": 200}}, lines
