"""The rendering manifest (``<out>/manifest.json``) and the formats it declares.

Asterisk's raw formats carry no header, so the manifest is what says how to read a file:
its format (rate, width, encoding), its duration and its SHA-256. ``check`` verifies every
file against it. This module imports only the standard library: the server reads durations
from it at start-up without loading pydub.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import SOUND_DIR

LANGUAGE = "id"
MANIFEST_NAME = "manifest.json"
VERSION = 1
# A file's duration may differ from the manifest's by this much (resampler edge samples).
DURATION_TOLERANCE_MS = 20


@dataclass(frozen=True)
class Format:
    """A headerless format that Asterisk plays without transcoding, mono."""

    sample_rate: int
    sample_width: int  # bytes per sample
    encoding: str      # ffmpeg's name for it (-f)

    def duration_ms(self, n_bytes: int) -> float:
        return n_bytes / self.sample_width / self.sample_rate * 1000

    def declaration(self) -> dict:
        return {"sample_rate": self.sample_rate, "channels": 1,
                "sample_width": self.sample_width, "encoding": self.encoding}


# .sln and .ulaw serve narrowband (G.711) channels, .sln16 wideband ones (G.722, Opus);
# Asterisk picks whichever needs the least translation for the caller's codec.
FORMATS: dict[str, Format] = {
    "sln": Format(8000, 2, "s16le"),
    "sln16": Format(16000, 2, "s16le"),
    "ulaw": Format(8000, 1, "mulaw"),
}

# Magic numbers of container formats: a raw file that starts with one was misnamed.
_CONTAINER_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC", b"FORM", b"\xff\xfb", b"\xff\xf3")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def sound_dir(out_dir: str | os.PathLike) -> Path:
    """Where the audio files live: ``<out>/id/bpjs`` (channel language "id")."""
    return Path(out_dir) / LANGUAGE / SOUND_DIR


def audio_path(out_dir: str | os.PathLike, prompt_id: str, ext: str) -> Path:
    return sound_dir(out_dir) / f"{prompt_id}.{ext}"


def empty_manifest() -> dict:
    return {"version": VERSION, "language": LANGUAGE,
            "formats": {ext: f.declaration() for ext, f in FORMATS.items()}, "prompts": {}}


def load_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest in ``out_dir``, or an empty one when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return empty_manifest()
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict):
        return empty_manifest()
    return data


def save_manifest(out_dir: str | os.PathLike, manifest: dict) -> None:
    path = Path(out_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                   "utf-8")
    os.replace(tmp, path)


def load_durations(out_dir: str | os.PathLike) -> dict[str, int]:
    """Prompt id → duration in ms from the manifest; empty when nothing is rendered."""
    return {pid: int(entry["duration_ms"])
            for pid, entry in load_manifest(out_dir)["prompts"].items()
            if isinstance(entry, dict) and "duration_ms" in entry}


def file_problem(path: Path, fmt: Format, duration_ms: float, sha256: str) -> str | None:
    """Why ``path`` is not the declared raw file, or None when it is."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    if not data:
        return "empty"
    if data.startswith(_CONTAINER_MAGIC):
        return "has a container header, not raw audio"
    if len(data) % fmt.sample_width:
        return f"{len(data)} bytes is not a whole number of {fmt.sample_width}-byte samples"
    actual = fmt.duration_ms(len(data))
    if abs(actual - duration_ms) > DURATION_TOLERANCE_MS:
        return (f"{actual:.0f} ms at {fmt.sample_rate} Hz, manifest says {duration_ms:.0f} ms "
                "(wrong sample rate or width?)")
    if sha256_bytes(data) != sha256:
        return "content differs from the manifest (sha256)"
    return None
