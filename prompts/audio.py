"""Source audio → the Asterisk files of one prompt. Runs in worker processes (CPU work).

Steps: decode (pydub; ffmpeg for anything but WAV), mono 16-bit, trim leading and trailing
silence, normalize loudness, pad even edges, then one ffmpeg run resamples and encodes every
declared format. Resampling is left to ffmpeg because pydub's ``set_frame_rate``
(``audioop.ratecv``) has no anti-aliasing filter: 22 kHz speech taken to 8 kHz that way folds
its sibilants back into the phone band.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

from pydub import AudioSegment
from pydub.silence import detect_leading_silence
from pydub.utils import get_encoder_name

from .manifest import FORMATS, audio_path, sha256_bytes

# Every prompt is brought to this RMS level, so prompts played in a row sound equally loud;
# the peak ceiling wins for the rare prompt whose peaks would otherwise clip.
TARGET_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0
# Trim where the level first/last rises above (peak - this), in chunks of TRIM_CHUNK_MS.
TRIM_BELOW_PEAK_DB = 40.0
TRIM_CHUNK_MS = 5
# Silence added to each side after trimming. Fragments (number words) are concatenated into
# one phrase, so their edges are short and all equal; full prompts get a little more air.
# Asterisk's Read, which plays a read-back as one list, adds 50 ms between its sounds.
EDGE_MS = {"fragment": 25, "prompt": 60}


def processing_sha256(kind: str) -> str:
    """Identifies the processing of a ``kind`` of prompt: changing any setting re-renders."""
    settings = [TARGET_DBFS, PEAK_CEILING_DBFS, TRIM_BELOW_PEAK_DB, TRIM_CHUNK_MS, EDGE_MS[kind],
                {ext: f.declaration() for ext, f in FORMATS.items()}]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


class AudioError(Exception):
    pass


def decode(source: bytes | str, source_format: str | None) -> AudioSegment:
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    seg = AudioSegment.from_file(data, format=source_format)
    return seg.set_channels(1).set_sample_width(2)


def trim(seg: AudioSegment) -> AudioSegment:
    threshold = seg.max_dBFS - TRIM_BELOW_PEAK_DB
    start = detect_leading_silence(seg, threshold, TRIM_CHUNK_MS)
    end = len(seg) - detect_leading_silence(seg.reverse(), threshold, TRIM_CHUNK_MS)
    return seg[start:end]


def normalize(seg: AudioSegment) -> AudioSegment:
    gain = min(TARGET_DBFS - seg.dBFS, PEAK_CEILING_DBFS - seg.max_dBFS)
    return seg.apply_gain(gain)


def prepare(source: bytes | str, source_format: str | None, kind: str) -> AudioSegment:
    seg = decode(source, source_format)
    if seg.rms == 0:
        raise AudioError("the source audio is silent")
    seg = normalize(trim(seg))
    edge = AudioSegment.silent(EDGE_MS[kind], frame_rate=seg.frame_rate)
    return edge + seg + edge


def write_formats(seg: AudioSegment, out_dir: str, prompt_id: str) -> dict:
    """Write every declared format of ``seg`` (one ffmpeg run); their sha256 and duration."""
    finals = {ext: audio_path(out_dir, prompt_id, ext) for ext in FORMATS}
    temps = {ext: p.with_name(f".{p.name}.tmp") for ext, p in finals.items()}
    cmd = [get_encoder_name(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "s16le", "-ar", str(seg.frame_rate), "-ac", "1", "-i", "pipe:0"]
    for ext, fmt in FORMATS.items():
        cmd += ["-ar", str(fmt.sample_rate), "-ac", "1", "-f", fmt.encoding, str(temps[ext])]
    proc = subprocess.run(cmd, input=seg.raw_data, capture_output=True)
    if proc.returncode:
        raise AudioError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()}")
    files = {}
    for ext in FORMATS:
        files[ext] = sha256_bytes(temps[ext].read_bytes())
        os.replace(temps[ext], finals[ext])
    sln = finals["sln"].stat().st_size
    return {"duration_ms": round(FORMATS["sln"].duration_ms(sln)), "files": files}


def process(source: bytes | str, source_format: str | None, kind: str, out_dir: str,
            prompt_id: str) -> dict:
    """The worker's job: ``source`` (audio bytes, or a recording's path) → files on disk."""
    Path(audio_path(out_dir, prompt_id, "x")).parent.mkdir(parents=True, exist_ok=True)
    return write_formats(prepare(source, source_format, kind), out_dir, prompt_id)
