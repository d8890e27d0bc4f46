"""The demo's showcase of WaveNet packages."""

from __future__ import annotations


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """One second of each class as a WAV file, and their spectrograms in one picture."""
    from ...plots import save_spectrograms
    from ...runtimes.audio import write_wav
    from .model import TONE_KINDS

    kinds = TONE_KINDS if pipe.num_classes == len(TONE_KINDS) else ("unconditional",)
    clips = {}
    for label, kind in enumerate(kinds):
        audio = pipe.generate(pipe.sample_rate, seed=0, labels=label if pipe.num_classes else None)
        write_wav(folder / f"{name}_{kind}.wav", audio, pipe.sample_rate)
        clips[kind] = audio
    save_spectrograms(clips, pipe.sample_rate, folder / f"{name}_samples.png")
    files = [f"{name}_{kind}.wav" for kind in kinds]
    lines = [f"![{name} samples]({name}_samples.png)", "",
             "Spectrograms of one second generated for each class, sample by sample (fast generation): "
             + ", ".join(f"[{f}]({f})" for f in files) + ".", ""]
    return {"wav_files": files}, lines
