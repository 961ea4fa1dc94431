"""Running this interpreter and checkout as an unprivileged user, wherever the clone lives.

A clone under a home folder of mode 0700 (``/root`` is one) cannot be read by ``nobody``, nor can
the virtual environment inside it. So the command runs in a private mount namespace where the
checkout and the interpreter's environment are bind-mounted at world-traversable places in a
scratch folder; only then does it drop to ``nobody``. Files keep their own permissions, so the
run sees exactly what an unprivileged user of a readable install would see.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOBODY = 65534
#: What the commands below need (root for unshare -m and setpriv).
TOOLS = ("unshare", "setpriv", "mount")


def tools_missing() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def private_paths() -> list[str]:
    """Checkout or interpreter paths that others cannot read (a clone made under umask 077).

    The bind mounts below make a private *home* harmless, but not a checkout whose own folders and
    files are private: nobody could not read it, just as the image build refuses such a context
    (Dockerfile: ``chmod -R a+rX``). Tests that run as nobody skip with these paths named.
    """
    prefix = Path(sys.prefix).resolve()
    wanted = [(ROOT, 0o005), (ROOT / "process.py", 0o004), (ROOT / "model", 0o005),
              (ROOT / "model" / "__init__.py", 0o004), (prefix, 0o005), (Path(sys.executable).resolve(), 0o005)]
    return [str(path) for path, bits in wanted if path.exists() and path.stat().st_mode & bits != bits]


def _why_not_as_nobody() -> str | None:
    if os.geteuid() != 0 or tools_missing():
        return "needs root to drop to nobody in its own mount and network namespace (unshare, setpriv)"
    private = private_paths()
    if private:
        return f"others cannot read {private[:2]} (a clone made under umask 077); chmod -R a+rX it"
    return None


_WHY_NOT = _why_not_as_nobody()
#: The mark for tests that run commands as nobody: skipped, with the reason, where they cannot.
as_nobody = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


def nobody_command(scratch: Path, python_args: list[str], network: bool = False) -> list[str]:
    """argv that runs ``python <python_args>`` as nobody, with the checkout at ``scratch/app``.

    ``python_args`` may name files of the checkout through ``scratch/app``; the working directory
    is ``scratch/app`` (so ``python -c`` imports the project's packages).
    """
    app, env = scratch / "app", scratch / "env"
    for mount_point in (app, env):
        mount_point.mkdir(exist_ok=True)
        mount_point.chmod(0o755)
    prefix = Path(sys.prefix).resolve()
    python = env / Path(sys.executable).relative_to(sys.prefix) if Path(sys.executable).is_relative_to(
        sys.prefix) else Path(sys.executable)
    script = (f"mount --bind {shlex.quote(str(ROOT))} {shlex.quote(str(app))} && "
              f"mount --bind {shlex.quote(str(prefix))} {shlex.quote(str(env))} && "
              f"cd {shlex.quote(str(app))} && "
              f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- {shlex.quote(str(python))} \"$@\"")
    return ["unshare", "-m", *([] if network else ["-n"]), "sh", "-c", script, "sh", *python_args]
