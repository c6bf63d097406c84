"""The one reader of secrets: provider keys, the Kafka password, the overlay token.

A secret comes from the file named by `<name>_file` in its config section when set, else
from the environment variable named by `<name>_env`; never from the config itself. Values
are returned, never logged; errors name the config key and the variable, not the value.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import ConfigError


def read_secret(cfg: dict, section: str, name: str, required: bool = True) -> str | None:
    s = cfg[section]
    path = s.get(f"{name}_file")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"config key '{section}.{name}_file': cannot read it ({e.strerror})") from None
        if not value:
            raise ConfigError(f"config key '{section}.{name}_file': the file is empty")
        return value
    value = os.environ.get(s[f"{name}_env"]) or None
    if value is None and required:
        raise ConfigError(f"config key '{section}.{name}_env': the variable {s[f'{name}_env']} is not set "
                          f"(or set {section}.{name}_file)")
    return value
