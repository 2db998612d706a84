"""The documents a newcomer reads stay true: settings, the state diagram, the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from dotenv import dotenv_values

from tipline.core import conversation
from tipline.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_and_loads_as_is() -> None:
    example = dotenv_values(ROOT / ".env.example")
    read = set(re.findall(r'"((?:TIPLINE|TWILIO|TELEGRAM)_[A-Z_]+)"', (ROOT / "tipline" / "config.py").read_text()))
    assert read and read <= set(example), sorted(read - set(example))
    load_settings({k: v or "" for k, v in example.items()})  # a copied .env.example is a valid config


def test_readme_diagram_is_the_state_machine_diagram() -> None:
    readme = (ROOT / "README.md").read_text()
    drawn = re.search(r"```mermaid\n(.*?)```", readme, re.S).group(1).split("\n")
    source = [line.strip() for line in conversation.__doc__.split("stateDiagram-v2", 1)[1].split("\n\n")[0].strip().split("\n")]
    assert [line.strip() for line in drawn if line.strip()][1:] == source


def test_every_transition_in_the_diagram_exists_in_the_code() -> None:
    from tipline.core.conversation import Context, ConversationState, Inbound, State, expire, step

    def after(state: str, event: str) -> str:
        drafting = state not in ("new", "await_what") or "photo draft" in event
        conv = ConversationState(State(state), "en", "T-ABCDEF" if drafting else None)
        if event.startswith("idle"):
            outcome = expire(conv)
            return outcome.conversation.state.value
        if event.startswith("photo only"):
            return step(conv, Inbound("", media=1), Context(new_reference="T-NEWREF")).conversation.state.value
        text = {"greeting": "hi", "description": "A robbery at the store", "place / SKIP": "skip",
                "time / SKIP": "skip", "follow-up": "more details", "NEW": "NEW", "DISCARD": "DISCARD"}[event]
        return step(conv, Inbound(text), Context(new_reference="T-NEWREF")).conversation.state.value

    for line in conversation.__doc__.splitlines():
        match = re.match(r"\s+(\w+) --> (\w+): (.+)", line)
        if match:
            assert after(match.group(1), match.group(3)) == match.group(2), line


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text()[:1200]
    assert "make run" in head and "make test" in head
