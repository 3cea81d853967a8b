"""What the image installs: ``deploy/requirements.py`` as the Dockerfile runs it (``EXTRAS`` build arg)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "requirements.py"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run(extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), extras, str(ROOT / "pyproject.toml")], capture_output=True, text=True, timeout=30
    )


def test_the_default_image_has_the_dependencies_and_no_extra() -> None:
    lines = run("").stdout.split()
    assert set(lines) == set(PROJECT["project"]["dependencies"]) | set(PROJECT["build-system"]["requires"])


def test_extras_add_their_groups_once_and_an_unknown_one_is_refused() -> None:
    optional = PROJECT["project"]["optional-dependencies"]
    lines = run("voice,embeddings").stdout.split()
    assert set(optional["voice"]) | set(optional["embeddings"]) <= set(lines)
    assert len(lines) == len(set(lines))
    assert not set(optional["dev"]) - set(PROJECT["project"]["dependencies"]) & set(lines)
    refused = run("voice,nope")
    assert refused.returncode != 0 and "unknown extra(s) nope" in refused.stderr


def test_the_dockerfile_installs_what_the_script_prints_for_its_extras_arg() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile
    assert 'requirements.py "$EXTRAS" > requirements.txt' in dockerfile
    assert "!deploy/requirements.py" in (ROOT / ".dockerignore").read_text()  # in the build context


def test_every_package_in_the_source_tree_is_installed() -> None:
    """``pip install .`` (the image) installs only the packages pyproject lists: a package missing there is
    missing from every container, though an editable install (``make run``, the tests) still finds it."""
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join((name, *init.parent.relative_to(ROOT / root).parts))
        for name, root in PROJECT["tool"]["setuptools"]["package-dir"].items()
        for init in (ROOT / root).rglob("__init__.py")
    }
    assert found == listed


def test_the_command_runs_without_the_voice_extras_numpy() -> None:
    """The image installs no numpy (the ``voice`` extra does): the ``switchboard`` command, its one-line
    errors included, must not import the voice package on its way (it once did, and every container failed)."""
    script = (
        "import sys; sys.modules['numpy'] = None\n"  # `import numpy` now fails, as in the image
        "from switchboard.cli import main\n"
        "for argv in (['chat', '--url', 'nowhere', '--say', 'x'], ['validate'], ['voice', 'transcribe', '/no.wav']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        print('exit', exc.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "exit switchboard chat: 'nowhere' is not a WebSocket URL" in done.stdout, done.stdout
    assert "scenario 'retail' is valid" in done.stdout and "exit 2" in done.stdout
    assert "switchboard voice: needs the voice extra: pip install 'switchboard[voice]'" in done.stderr
