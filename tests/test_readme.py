"""The README stays two screens and true: its commands exist in `--help`, its links and pictures exist.

Every `ferlib <command> ... --option` in the README must be a real command and option (read from the
CLI's own parser, as `--help` prints them); every `scripts/<name> ... --option` a script that defines
that option; every relative link and image a file in the checkout.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ferlib.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def _commands(text: str) -> list[list[str]]:
    """Shell-like commands in the README: code-block lines and `inline code` that start with a program."""
    found = []
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [ln.split("#")[0] for b in blocks for ln in b.splitlines()]
    lines += re.findall(r"`([^`\n]*(?:ferlib|scripts/)[^`\n]*)`", text)
    for ln in lines:
        try:
            words = shlex.split(ln)
        except ValueError:
            continue
        words = _program_and_arguments(words)
        if words:
            found.append(words)
    return found


def _program_and_arguments(words: list[str]) -> list[str]:
    """The words from the program on: leading VAR=value assignments, `sudo` and `taskset -c CPUS` dropped."""
    while words:
        if "=" in words[0] and not words[0].startswith("-") or words[0] == "sudo":
            words = words[1:]
        elif words[0] == "taskset":
            words = words[3:]
        else:
            break
    return words


def _ferlib_calls(text: str) -> list[list[str]]:
    out = []
    for words in _commands(text):
        if words[0].endswith("/ferlib") or words[0] == "ferlib":
            out.append(words[1:])
        elif words[:3] in (["python", "-m", "ferlib"], [".venv/bin/python", "-m", "ferlib"]):
            out.append(words[3:])
    return out


def _script_calls(text: str) -> list[list[str]]:
    out = []
    for words in _commands(text):
        if words[0].endswith("python") and len(words) > 1:
            words = words[1:]
        if words[0].startswith("scripts/"):
            out.append(words)
    return out


def test_the_readme_fits_two_screens():
    n = len(README.read_text().splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines (at most {MAX_LINES}): move detail to docs/"


def test_every_ferlib_command_and_option_in_the_readme_exists():
    subs = _subparsers()
    calls = _ferlib_calls(README.read_text())
    assert len(calls) >= 5, calls  # the README shows the CLI
    for words in calls:
        if not words or words[0] in {"--help", "-h", "--version"}:
            continue
        assert words[0] in subs, f"`ferlib {words[0]}` is not a command (have {sorted(subs)})"
        known = {s for a in subs[words[0]]._actions for s in a.option_strings}
        unknown = [w.split("=")[0] for w in words[1:] if w.startswith("--") and w.split("=")[0] not in known]
        assert unknown == [], f"`ferlib {' '.join(words)}`: {unknown} not in `ferlib {words[0]} --help`"


def test_every_script_and_its_options_in_the_readme_exist():
    calls = _script_calls(README.read_text())
    assert calls, "the README names the scripts behind its figures"
    for words in calls:
        script = ROOT / words[0]
        assert script.is_file(), f"{words[0]} does not exist"
        source = script.read_text()
        for w in words[1:]:
            if w.startswith("--"):
                assert f'"{w.split("=")[0]}"' in source, f"{words[0]} defines no option {w}"


def test_links_and_pictures_in_the_readme_exist():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert any(t.startswith("docs/images/") for t in local), "the README shows the app in pictures"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []


def test_the_checker_catches_a_stale_command():
    with pytest.raises(AssertionError):
        subs = _subparsers()
        words = _ferlib_calls("```bash\n.venv/bin/ferlib predict x.jpg --no-such-option\n```")[0]
        known = {s for a in subs[words[0]]._actions for s in a.option_strings}
        assert [w for w in words[1:] if w.startswith("--") and w not in known] == []
