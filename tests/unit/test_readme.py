"""The README stays true: every setting is documented with its default, and every command is listed."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from control.cli import app
from services.settings import variables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default():
    rows = dict(re.findall(r"^\| `(AFINA_[A-Z0-9_]+)` \| `([^`]*)` \|", README, flags=re.MULTILINE))
    found = variables()
    assert len(found) > 50  # every slice's variables, not only the shared ones
    for name, default in found.items():
        shown = ("(none)" if default is None else "''" if default == "" else
                 str(default).lower() if isinstance(default, bool) else str(default))
        assert rows.get(name) == shown, f"{name} is missing or its default is wrong"


def test_every_command_is_in_the_readme():
    for name, command in get_command(app).commands.items():
        if not command.hidden:
            assert f"afina {name}" in README, f"`afina {name}` is not in the README"
