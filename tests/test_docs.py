"""The documents a newcomer reads stay true: settings, the state diagram, the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from dotenv import dotenv_values

from tipline.config import load_settings
from tipline.core import conversation

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_and_loads_as_is() -> None:
    example = dotenv_values(ROOT / ".env.example")
    read = set(re.findall(r'"((?:TIPLINE|TWILIO|TELEGRAM)_[A-Z_]+)"', (ROOT / "tipline" / "config.py").read_text()))
    assert read, "no setting names found in config.py"
    assert read <= set(example), sorted(read - set(example))
    load_settings({k: v or "" for k, v in example.items()})  # a copied .env.example is a valid config


def test_readme_diagram_is_drawn_from_the_state_table() -> None:
    # The table's transitions are each produced by the code (tests/test_conversation.py).
    blocks = re.findall(r"```mermaid\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks == [conversation.mermaid()]


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1200]
    assert "make run" in head
    assert "make test" in head
