"""Print the requirements the container image installs, one per line: the project's dependencies, its
build backend, and the dependencies of the extras named in the first argument (comma-separated, e.g.
``voice,embeddings``; empty for none). An unknown extra is an error, not a silently smaller image.

    python deploy/requirements.py [EXTRAS] [PYPROJECT]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: dict[str, object], extras: str) -> list[str]:
    project = pyproject["project"]
    build = pyproject["build-system"]
    assert isinstance(project, dict) and isinstance(build, dict)
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted = [e.strip() for e in extras.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; the project has: {', '.join(sorted(optional))}")
    lines = [*project["dependencies"], *build["requires"], *(r for e in wanted for r in optional[e])]
    return list(dict.fromkeys(lines))


if __name__ == "__main__":
    extras = sys.argv[1] if len(sys.argv) > 1 else ""
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("pyproject.toml")
    print("\n".join(requirements(tomllib.loads(path.read_text()), extras)))
