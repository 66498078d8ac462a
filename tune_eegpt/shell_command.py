"""Commands the product prints, written so that they run when pasted into a fresh shell.

A fresh shell has no virtual environment active, so a bare ``python`` there is another
interpreter (often one without torch). The commands name the interpreter that is running
now instead: relative to the working folder when it lies inside it (``.venv/bin/python``
in the checkout), plain ``python`` when that is what the shell's PATH finds anyway, and
the absolute path otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def python_command() -> str:
    """The running interpreter, as a user types it from the working folder."""
    if not sys.executable:  # an embedded interpreter: nothing better to say
        return "python"
    executable = Path(sys.executable)
    if not executable.is_absolute():
        executable = Path.cwd() / executable
    on_path = shutil.which("python")
    if on_path and _same_file(Path(on_path), executable):
        return "python"
    try:
        relative = executable.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(executable))
    return shlex.quote(str(relative))


def module_command(module: str, *args: str) -> str:
    """``<python> -m MODULE ARGS``, each argument quoted for a POSIX shell."""
    return " ".join([python_command(), "-m", module, *(shlex.quote(str(a)) for a in args)])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) and a.parent.resolve() == b.parent.resolve()
    except OSError:
        return False
