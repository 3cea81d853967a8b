"""``make audit-deps``: pip-audit the virtualenv's installed dependencies and say what it could check.

Fails (exit 1) when a dependency has a known vulnerability: bump its pin in pyproject.toml. Dependencies the
vulnerability service does not know (a private mirror's, or no network) are counted and listed in
``var/pip-audit.json``; ``--strict`` fails on them too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPORT = Path("var/pip-audit.json")


def main(argv: list[str]) -> int:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [str(pip_audit), "--local", "--skip-editable", "--progress-spinner", "off", "-f", "json",
               "-o", str(REPORT), *argv]  # fmt: skip
    status = subprocess.run(command, check=False).returncode
    if not REPORT.exists():
        return status or 1
    deps = json.loads(REPORT.read_text())["dependencies"]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    print(
        f"pip-audit: {len(deps) - len(skipped)} packages audited, {len(vulnerable)} with known vulnerabilities, "
        f"{len(skipped)} not auditable (unknown to the vulnerability service; see {REPORT})"
    )
    for d in vulnerable:
        fixes = ", ".join(f"{v['id']} (fixed in {', '.join(v.get('fix_versions') or ['?'])})" for v in d["vulns"])
        print(f"  {d['name']} {d['version']}: {fixes}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
