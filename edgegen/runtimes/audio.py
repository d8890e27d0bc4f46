"""Audio helpers the runtime and the trainer share: mu-law companding and WAV files (16-bit
PCM through the standard library's `wave`). numpy only."""

from __future__ import annotations

import io
import os
import struct
import warnings
import wave
from pathlib import Path

import numpy as np

from ..errors import DataError, EdgegenWarning, NonFiniteError
from ..storage import atomic_write_bytes, data_files


def mu_law_encode(audio: np.ndarray, channels: int = 256) -> np.ndarray:
    """[-1, 1] floats -> int64 codes 0..channels-1 (WaveNet's companding, then uniform bins)."""
    mu = channels - 1
    x = np.clip(audio, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.clip(np.floor((y + 1) / 2 * mu + 0.5), 0, mu).astype(np.int64)


def mu_law_decode(codes: np.ndarray, channels: int = 256) -> np.ndarray:
    """int codes -> float32 audio in [-1, 1]."""
    mu = channels - 1
    y = 2 * np.asarray(codes, dtype=np.float64) / mu - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM, written atomically; NaN or Inf samples are refused, not written as noise."""
    if not np.isfinite(audio).all():
        raise NonFiniteError(f"audio for {str(path)!r}: expected finite samples, found NaN or Inf")
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1, 1) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buffer.getvalue(), follow_symlink=True)


# what Python's wave module says of the WAV files it cannot read, as a user can act on it
WAV_FORMATS = {"unknown format: 3": "floating-point samples (format 3): save it as 16-bit PCM",
               "unknown format: 65534": "WAVE_FORMAT_EXTENSIBLE, which this Python's wave module does not read (3.12 "
                                        "and later do): save it as plain 16-bit PCM"}


def read_wav(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """A 16-bit PCM WAV as float32 mono in [-1, 1], channels averaged, resampled to `sample_rate`:
    low-passed below its Nyquist frequency first where that is lower than the file's (a 5 kHz
    tone of a 44.1 kHz file came back as a 3 kHz one at 8 kHz), then interpolated linearly."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        found = WAV_FORMATS.get(str(exc), str(exc) or "an empty or truncated file")
        raise DataError(f"{path}: expected a 16-bit PCM WAV file, found {found}") from None
    except (RuntimeError, struct.error) as exc:   # wave's seek past a chunk a writer left unpadded, a short header
        raise DataError(f"{path}: expected a 16-bit PCM WAV file, found chunks the wave module cannot read "
                        f"({exc.__class__.__name__}: {exc})") from None
    if width != 2:
        raise DataError(f"{path}: expected 16-bit PCM samples, found {8 * width}-bit")
    if not MIN_WAV_RATE <= rate <= MAX_WAV_RATE:   # 0 divided below; 1 Hz made 8,000 samples of each one
        # and 4 GHz built an anti-aliasing filter of 36 million taps: minutes, and 1.7 GB, for one file
        raise DataError(f"{path}: expected a sample rate from {MIN_WAV_RATE} to {MAX_WAV_RATE} Hz in its header, found "
                        f"{rate} Hz")
    frames = frames[:len(frames) - len(frames) % (width * channels)]   # a truncated file's last partial frame
    per_channel = np.frombuffer(frames, "<i2").astype(np.float32).reshape(-1, channels) / 32768
    audio = per_channel.mean(axis=1)
    if channels > 1:
        _warn_if_channels_cancel(path, per_channel, audio)
    if rate > sample_rate and len(audio) > 1:   # a file of no frames stays empty (a short clip, left out)
        audio = low_passed(audio, ANTI_ALIAS_CUTOFF * sample_rate / rate)
    if rate != sample_rate and len(audio) > 1:
        times = np.arange(int(len(audio) * sample_rate / rate)) / sample_rate
        audio = np.interp(times, np.arange(len(audio)) / rate, audio).astype(np.float32)
    return audio


CANCELLED_DB = 20   # a mono mix this far below its channels' level: they cancel (opposite phase), not mix


def _warn_if_channels_cancel(path, per_channel: np.ndarray, mono: np.ndarray) -> None:
    """Said where averaging the channels to mono leaves near silence of channels that are not
    silent: a stereo file whose channels are in opposite phase (a mis-wired microphone, a
    mid/side recording) reached the model as silence without a word (helper 146)."""
    # dot products: no squared copy of a long recording (float32 sums, plenty for a ratio of levels)
    channel_level = float(np.sqrt(np.vdot(per_channel, per_channel) / max(per_channel.size, 1)))
    mono_level = float(np.sqrt(np.vdot(mono, mono) / max(mono.size, 1)))
    if channel_level > 1e-3 and mono_level < channel_level * 10 ** (-CANCELLED_DB / 20):
        below = 20 * np.log10(channel_level / max(mono_level, 1e-12))
        warnings.warn(f"{path}: its {per_channel.shape[1]} channels cancel when averaged to mono (the mix is "
                      f"{below:.0f} dB below them: opposite phase), so it is read as near silence; save one channel "
                      "of it as a mono WAV to use it", EdgegenWarning, stacklevel=3)


def wav_format(path: str | os.PathLike) -> tuple[int, int]:
    """(sample rate, channels) of a WAV file read_wav has read: what reading it changed, for a
    training run to say."""
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels()


MIN_WAV_RATE = 1000   # Hz: below it a header's rate is damage, not audio (8 kHz telephone audio is the lowest in use)
MAX_WAV_RATE = 768_000   # Hz: the highest rate audio interfaces record at; above it, damage too
ANTI_ALIAS_CUTOFF = 0.45   # of the new sample rate: the filter's transition band ends below its Nyquist (0.5)
AUDIO_SUFFIXES = (".wav",)   # what wav_files takes from a folder


def low_passed(audio: np.ndarray, cutoff: float) -> np.ndarray:
    """`audio` through a Blackman-windowed sinc low-pass at `cutoff` cycles per sample (about 74 dB
    down in the stop band), its delay taken out: what resampling to a lower rate needs first."""
    half = int(np.ceil(16 / cutoff))   # the transition band (5.5 / taps wide) within 0.05 of the new rate either side
    n = np.arange(-half, half + 1)
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(len(n))
    taps /= taps.sum()   # a constant passes unchanged
    return np.convolve(audio, taps.astype(np.float32), mode="full")[half:half + len(audio)].astype(np.float32)


def wav_files(folder: Path) -> list[Path]:
    """The WAV files under `folder`, hidden ones left out."""
    return data_files(folder, AUDIO_SUFFIXES)
