"""The commands and code the documentation shows still run: every `python -m weat_core` line of
the README, docs/, the scripts and the shipped model cards parses with today's command line, every
stored re-measure / re-train command in a shipped config.json does too, and the README's Python
example runs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from weat_core.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python3? -m weat_core ([a-z][^`\n|]*)")


def _documents() -> list[Path]:
    return ([REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "scripts").glob("*.sh")),
             *sorted((REPO / "checkpoints").glob("**/README.md"))])


def _commands(text: str) -> list[str]:
    """The command lines in a text, cut at a shell comment, `&&` or a quote's end, and without
    the ones that elide arguments (`train ... --resume`) or take them from shell variables."""
    out = []
    for m in COMMAND.finditer(text):
        cmd = re.split(r" #|&&|\)", m.group(1))[0].strip().rstrip(".,;:")
        if "..." in cmd or "…" in cmd or "$" in cmd or "<" in cmd or cmd.endswith("\\"):
            continue
        out.append(cmd)
    return out


def _lenient_parser():
    """The real parser with no option required: the docs also name a command with one option
    (`sweep --store`), which must still be an option of that command."""
    parser = build_parser()
    for sub in parser.command_parsers.values():
        for action in sub._actions:
            action.required = False
        for group in sub._mutually_exclusive_groups:
            group.required = False
    return parser


def _parse(cmd: str) -> None:
    try:
        _lenient_parser().parse_args(shlex.split(cmd))
    except SystemExit as e:  # argparse's errors
        raise AssertionError(f"`python -m weat_core {cmd}` no longer parses (exit {e.code})") from None


def test_documented_commands_parse(capsys):
    seen = 0
    for doc in _documents():
        for cmd in _commands(doc.read_text()):
            _parse(cmd)
            seen += 1
    assert seen >= 50, f"found only {seen} documented commands: has the pattern stopped matching?"


def test_script_commands_use_known_options():
    """The scripts build their commands from shell variables, which the test above skips: here each
    `--option` of a `python -m weat_core COMMAND` line (continuations joined) must be one of that
    command's options."""
    commands = build_parser().command_parsers
    seen = 0
    for script in sorted((REPO / "scripts").glob("*.sh")):
        for line in script.read_text().replace("\\\n", " ").splitlines():
            m = re.search(r"weat_core ([a-z-]+)\b(.*)", line)
            if not m or m.group(1) not in commands:
                continue
            known = {s for a in commands[m.group(1)]._actions for s in a.option_strings}
            for opt in re.findall(r"(?<![\w$])--[a-z][a-z0-9-]*", m.group(2)):
                assert opt in known, f"{script.name}: `{m.group(1)} {opt}` is not an option of {m.group(1)}"
                seen += 1
    assert seen >= 30, f"checked only {seen} options: has the pattern stopped matching?"


def test_stored_reproduce_commands_parse():
    configs = sorted((REPO / "checkpoints").glob("**/config.json"))
    if not configs:
        pytest.skip("no shipped checkpoints in this checkout")
    seen = 0
    for cfg in configs:
        for key, cmd in (json.loads(cfg.read_text()).get("reproduce") or {}).items():
            for part in (cmd if isinstance(cmd, list) else [cmd]):
                for one in part.split("&&"):
                    if "weat_core" in one:
                        _parse(one.split("weat_core", 1)[1].strip())
                        seen += 1
    assert seen >= len(configs)


def test_the_readme_python_example_runs():
    """The README's "From Python" block, run as written except its last line, which loads from the
    Hub: here it loads a shipped checkpoint by name, as its comment offers."""
    text = (REPO / "README.md").read_text()
    block = text.split("## From Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert 'checkpoints.load("owner/repo-on-the-hub", revision="main")' in block
    names = [p.parent.name for p in (REPO / "checkpoints").glob("*/model*.safetensors")]
    if not names:
        pytest.skip("no shipped checkpoint with weights in this checkout")
    block = block.replace('checkpoints.load("owner/repo-on-the-hub", revision="main")',
                          f'checkpoints.load("{sorted(names)[-1]}")')
    scope: dict = {}
    exec(compile(block, "README.md (From Python)", "exec"), scope)
    assert scope["x_adv"].shape == scope["x"].shape and scope["e_adv"].shape == (8,)
    assert scope["out"].loss.shape == (8,) and "weight" in scope["out"].terms
    assert scope["model"].config["source"].endswith(sorted(names)[-1])
