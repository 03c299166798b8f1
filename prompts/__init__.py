"""The prompt catalog (``catalog.toml``) and, in ``prompts.render``, its audio rendering.

A prompt id names one piece of speech; its Asterisk sound name is ``bpjs/<id>``.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Mapping

SOUND_DIR = "bpjs"


@dataclass(frozen=True)
class Catalog:
    """Every prompt and fragment id with its Indonesian text."""

    prompts: Mapping[str, str]
    fragments: Mapping[str, str]

    @property
    def texts(self) -> Mapping[str, str]:
        return MappingProxyType({**self.prompts, **self.fragments})

    def text(self, prompt_id: str) -> str:
        try:
            return self.prompts[prompt_id]
        except KeyError:
            return self.fragments[prompt_id]

    def __contains__(self, prompt_id: str) -> bool:
        return prompt_id in self.prompts or prompt_id in self.fragments

    @staticmethod
    def sound_name(prompt_id: str) -> str:
        return f"{SOUND_DIR}/{prompt_id}"

    @staticmethod
    def prompt_id(sound_name: str) -> str | None:
        prefix = SOUND_DIR + "/"
        return sound_name[len(prefix):] if sound_name.startswith(prefix) else None


def parse_catalog(toml_text: str) -> Catalog:
    data = tomllib.loads(toml_text)
    prompts, fragments = dict(data.get("prompts", {})), dict(data.get("fragments", {}))
    # Later sections ([<name>.prompts], [<name>.fragments]) add theirs to the two sets.
    for name, section in data.items():
        if name not in ("prompts", "fragments") and isinstance(section, dict):
            for kind, into in (("prompts", prompts), ("fragments", fragments)):
                for key, text in section.get(kind, {}).items():
                    if key in into:
                        raise ValueError(f"id defined twice: {key}")
                    into[key] = text
    clash = set(prompts) & set(fragments)
    if clash:
        raise ValueError(f"ids both prompt and fragment: {sorted(clash)}")
    return Catalog(MappingProxyType(dict(prompts)), MappingProxyType(dict(fragments)))


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the project (parsed once per process)."""
    return parse_catalog(resources.files(__package__).joinpath("catalog.toml").read_text("utf-8"))
