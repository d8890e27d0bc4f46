"""The demo's showcase of super-resolution packages: a held-out photograph's crop, degraded,
then bicubic and edgegen side by side with the original."""

from __future__ import annotations

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    from .evaluation import side_by_side

    panels, scores = side_by_side(pipe)
    save_grid(panels, folder / f"{name}_samples.png", nrow=len(panels), scale=1)
    lines = [f"![{name}: input, bicubic, edgegen, original]({name}_samples.png)", "",
             f"A crop of a held-out photograph, degraded (blur, x{pipe.scale} downscale, noise, JPEG) and upscaled: "
             "the input (enlarged by pixel repetition), bicubic, edgegen, the original. Over held-out crops: "
             f"PSNR {scores['edgegen_psnr']:.2f} dB for edgegen against {scores['bicubic_psnr']:.2f} dB for bicubic, "
             f"SSIM {scores['edgegen_ssim']:.4f} against {scores['bicubic_ssim']:.4f}.", ""]
    return {"quality": scores}, lines

