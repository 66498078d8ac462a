"""The project's argument parser: argparse, with a short error that suggests the flag meant.

argparse answers a misspelled flag (``--num-sample``) with its whole usage, often a dozen
lines, and no hint. This parser prints one line with the closest flag or subcommand
(difflib, as the config's unknown keys get) and where the full usage is.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Any, NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line with a "did you mean"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.known_flags: list[str] = []  # every option string added (-h first), for hints
        self.known_commands: list[str] = []
        self.commands: list[ArgumentParser] = []  # argparse reports their unknown flags here
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        self.known_flags += [n for n in names if isinstance(n, str) and n.startswith("-")]
        return super().add_argument(*names, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", type(self))
        subparsers = super().add_subparsers(**kwargs)
        create = subparsers.add_parser

        def named(name: str, **options: Any) -> argparse.ArgumentParser:
            self.known_commands.append(name)
            options.setdefault("allow_abbrev", False)  # as the checked call sites say
            command = create(name, **options)
            self.commands.append(command)
            return command

        subparsers.add_parser = named
        return subparsers

    def error(self, message: str) -> NoReturn:
        flags = self.known_flags + [f for c in self.commands for f in c.known_flags]
        hint = suggestion(message, flags, self.known_commands)
        print(
            f"{self.prog}: error: {message}{hint} (all options: {self.prog} --help)",
            file=sys.stderr,
        )
        sys.exit(2)


def suggestion(message: str, flags: list[str], commands: list[str]) -> str:
    """ "; did you mean --x?" for the first unknown flag or subcommand in ``message``."""
    unknown = re.search(r"unrecognized arguments: (.+)$", message)
    if unknown:
        for word in unknown.group(1).split():
            name = word.split("=", 1)[0]
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
            if name.startswith("-") and close:
                return f"; did you mean {close[0]}?"
    choice = re.search(r"invalid choice: '([^']+)'", message)
    if choice:
        close = difflib.get_close_matches(choice.group(1), commands, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]}?"
    return ""
