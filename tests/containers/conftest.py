"""Container fixtures: the image built from scratch once per run (the debootstrapped base is cached)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .podman import IMAGE, ROOT, Containers, env, podman, require_podman


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """Build the image with no layer cache (``--no-cache``): what a fresh checkout builds."""
    require_podman()
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / "deploy" / "build-image.sh"), IMAGE, "--no-cache"],
        env=env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"image build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage {IMAGE}: built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB", file=sys.stderr)
    yield IMAGE
    podman("rmi", "--force", IMAGE, check=False)
    podman("image", "prune", "--force", "--filter", "label=io.switchboard.stage=build", check=False)


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    pool = Containers(image)
    try:
        yield pool
    finally:
        pool.close()
