"""`edgegen generate` for WaveNet packages: --seconds of audio, sample by sample, to a WAV file."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest, GenerationCall, Option, label_option
from ...storage import refuse_nameless
from ...wording import counted
from .pipeline import MAX_SECONDS

OPTIONS = (
    Option("--seconds", "seconds", "length of the audio to generate", {"type": float}, default=1.0),
    label_option("unconditional"),
    Option("--temperature", "temperature", "softmax temperature", {"type": float}, 1.0),
)


BENCH_SECONDS = 0.25


def bench_generation(pipe, n: int, steps: int | None) -> GenerationCall:
    """A quarter second of audio, sample by sample through the cached step graph (one clip: the
    loop has no batch); its samples per second over the sample rate is the real-time factor."""
    samples = max(1, round(BENCH_SECONDS * pipe.sample_rate))
    return GenerationCall(lambda: pipe(samples, seed=0), samples, "audio samples",
                          f"{samples} audio samples ({BENCH_SECONDS:g} s at {pipe.sample_rate} Hz), one at a time")


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: a .wav --out, and --seconds in range."""
    seconds = options.get("seconds")
    if out is None or not str(out).lower().endswith(".wav"):
        raise ConfigError(f"--out: expected a .wav file to write for a wavenet package, found {repr(out) if out else 'none'}")
    refuse_nameless(out, ".wav", "--out")
    if seconds is None or not 0 < seconds <= MAX_SECONDS:
        raise ConfigError(f"--seconds: expected a duration above 0 and at most {MAX_SECONDS} for a wavenet package, "
                          f"found {seconds!r}")


def generate(pipe, request: GenerateRequest) -> str:
    from ...runtimes.audio import write_wav

    out, seconds = request.out, request.options["seconds"]
    samples = max(1, round(seconds * pipe.sample_rate))
    label = request.options.get("labels")
    audio = pipe(samples, seed=request.seed, labels=label, temperature=request.options["temperature"], progress=None)
    write_wav(out, audio, pipe.sample_rate)
    # 4 figures: a clip shorter than 5 ms read "0.00 s"
    return (f"wrote {out} ({counted(samples, 'sample')}, {samples / pipe.sample_rate:.4g} s at {pipe.sample_rate} Hz, "
            f"{'no label' if label is None else f'label {label}'}, seed {request.seed})")


def served(config):
    """The served request (edgegen triton): --seconds as a count of samples, the waveform out."""
    from ...serving.requests import Field, Served, option_field

    def answer(pipe, arguments: dict):
        yield {"audio": pipe(**arguments)}

    # one clip a request: one class label, not one per sample as the image families take them
    inputs = (Field("num_samples", "int64", required=True), Field("seed", "int64"), Field("labels", "int64"),
              *(option_field(o) for o in OPTIONS if o.keyword not in ("seconds", "labels")))
    return Served(inputs, (Field("audio", "float32", (-1,)),), answer)
