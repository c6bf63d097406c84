"""docs/configuration.md, rendered from the config schema (`pipeline.config.SCHEMA`).

The schema is the one place a key's type, range, default and meaning are written, so
the reference is generated from it rather than kept by hand:

    onair config --doc > docs/configuration.md      (or: python -m pipeline.configdoc)

`tests/test_config.py` fails when the committed file differs from what this renders.
Rendering is apart from validating: config.py never imports this module.
"""
from __future__ import annotations

import re
import sys

import yaml

from pipeline import config as C

HEADER = """\
# Configuration reference

<!-- Generated from the schema in pipeline/config.py by `onair config --doc`; do not edit by hand.
     After changing a key, run: onair config --doc > docs/configuration.md -->

onair reads one YAML file (`--config FILE`, default `configs/pipeline.yaml`) and then the
`--set SECTION.KEY=VALUE` overrides of the command line (a value is parsed as YAML: `--set
hmm.p_enter_music=null`, `--set metrics.music_channels=[a,b]`). Every key is validated when the
config loads: an unknown section or key, a value of the wrong type or out of range stops the
command with one line naming the dotted key. A key left out takes the **default** below; where
`configs/pipeline.yaml` sets another value, the table says so. `onair config` prints the
config a command would run with.

**Units**: `_s` seconds, `_ms` milliseconds, `_db` decibels, `_bytes` bytes; money in
`recognition.currency`. **Ranges** are inclusive; "or null" means the key may be `null`
(what null means is in the key's line). One frame is 0.96 s of audio.

Secrets (provider keys, the overlay token, the Kafka password) are never read from this file:
each has a `*_env` key naming an environment variable and a `*_file` key naming a file (the
file wins when set), so the same config can be shared and committed.
"""

SUFFIX_UNITS = (("_ms", "ms"), ("_db", "dB"), ("_bytes", "bytes"), ("_frames", "frames"), ("_s", "s"))


def unit(key: str, spec) -> str:
    if spec.unit:
        return spec.unit
    return next((u for suffix, u in SUFFIX_UNITS if key.endswith(suffix)), "")


def value(v) -> str:
    """A default as it would be written in YAML."""
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, float):
        return f"{v:g}"
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _range(lo, hi) -> str:
    if lo is None and hi is None:
        return "any"
    if hi is None:
        return f">= {_num(lo)}"
    if lo is None:
        return f"<= {_num(hi)}"
    return f"{_num(lo)} to {_num(hi)}"


def valid(spec) -> str:
    """What the spec accepts, in words (mirrors its `check`)."""
    if isinstance(spec, C.Int):
        return f"integer, {_range(spec.lo, spec.hi)}"
    if isinstance(spec, C.OptInt):
        return f"integer, {_range(spec.lo, spec.hi)}, or null"
    if isinstance(spec, C.Float):
        return f"number, {_range(spec.lo, spec.hi)}" + (", or null" if spec.optional else "")
    if isinstance(spec, C.Choice):
        return "one of " + ", ".join(f"`{c}`" for c in spec.choices)
    if isinstance(spec, C.Bool):
        return "`true`, `false`"
    if isinstance(spec, C.AutoBool):
        return "`auto`, `true`, `false`"
    if isinstance(spec, C.Str):
        return "text" + (", or null" if spec.optional else "")
    if isinstance(spec, C.Track):
        return "`first`, `index:N`, `lang:CODE`, `pid:N`"
    if isinstance(spec, C.StrList):
        return "list of names"
    if isinstance(spec, C.GenreMap):
        return "genre: [AudioSet class, ...]"
    raise TypeError(f"no rendering for config spec {type(spec).__name__}: add it to pipeline/configdoc.py")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def shipped() -> dict:
    """configs/pipeline.yaml as validated, to show where it departs from the schema's defaults."""
    return C.validate(yaml.safe_load(C.DEFAULT_CONFIG.read_text()), str(C.DEFAULT_CONFIG))


def _same(a, b) -> bool:
    norm = (lambda v: list(v) if isinstance(v, tuple) else v)
    return norm(a) == norm(b)


def environment() -> list[str]:
    rows = [(name, meaning) for name, meaning in C.ENVIRONMENT.items()]
    for sec, keys in C.SCHEMA.items():
        for key, spec in keys.items():
            if key.endswith("_env"):
                what = re.sub(r"^environment variable holding ", "", spec.doc)
                file_key = key.removesuffix("_env") + "_file"
                rows.append((spec.default, f"{what}: the name is `{sec}.{key}`; `{sec}.{file_key}` reads it from "
                                           f"a file instead"))
    out = ["## Environment variables", "", "| variable | what |", "| --- | --- |"]
    out += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in rows]
    return out


def section(sec: str, keys: dict, ship: dict) -> list[str]:
    out = [f"## `{sec}`", "", C.SECTIONS[sec], "", "| key | default | unit | valid | meaning |",
           "| --- | --- | --- | --- | --- |"]
    after = []
    for key, spec in keys.items():
        if isinstance(spec.default, dict):
            default = "below"
            after += ["", f"Default `{sec}.{key}`:", "", "```yaml",
                      yaml.safe_dump({key: spec.default}, default_flow_style=None, sort_keys=False, width=100).strip(),
                      "```"]
        else:
            default = f"`{value(spec.default)}`"
        if not _same(ship[sec][key], spec.default) and sec != "heads":
            default += f" (`configs/pipeline.yaml`: `{value(ship[sec][key])}`)"
        out.append(f"| `{key}` | {_cell(default)} | {unit(key, spec)} | {_cell(valid(spec))} | {_cell(spec.doc)} |")
    return out + after


def render() -> str:
    ship = shipped()
    lines = [HEADER.rstrip("\n"), ""]
    lines += ["Sections: " + ", ".join(f"[`{s}`](#{s})" for s in C.SCHEMA) + ".", ""]
    lines += environment() + [""]
    for sec, keys in C.SCHEMA.items():
        lines += section(sec, keys, ship) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
