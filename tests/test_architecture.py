"""The layout's rules, checked on the source: the Dagster boundary and a light sensor."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("dagster", "pipelines")  # top-level packages only the wiring may import


def _wiring(rel: Path) -> bool:
    """pipelines/ and each stage's assets.py are where Dagster lives."""
    return rel.parts[0] == "pipelines" or (len(rel.parts) == 3 and rel.parts[0] == "assets" and rel.name == "assets.py")


def _plain_modules() -> list[Path]:
    files = [p for top in ("assets", "models", "losses", "data", "benchmarks") for p in (REPO / top).rglob("*.py")]
    return sorted(p for p in files if not _wiring(p.relative_to(REPO)))


def forbidden_imports(source: str, where: str) -> list[str]:
    """'where:line: imports ...' for every import of dagster or pipelines in the source (nested ones too)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{where}:{node.lineno}: imports {name}")
    return found


def test_only_the_wiring_imports_dagster_or_pipelines():
    modules = _plain_modules()
    assert len(modules) > 40  # the scan sees the project, not an empty tree
    problems = [p for m in modules for p in forbidden_imports(m.read_text(), str(m.relative_to(REPO)))]
    assert problems == [], "plain modules must not import dagster or pipelines:\n" + "\n".join(problems)


def test_the_boundary_check_finds_an_import():
    probe = "import os\n\ndef f():\n    from dagster import asset\n    import pipelines.resources\n"
    assert forbidden_imports(probe, "assets/core/probe.py") == ["assets/core/probe.py:4: imports dagster",
                                                                "assets/core/probe.py:5: imports pipelines.resources"]
    assert not _wiring(Path("assets/core/probe.py")) and not _wiring(Path("models/assets.py"))
    assert _wiring(Path("assets/core/assets.py")) and _wiring(Path("pipelines/sensors.py"))


def test_the_sensor_module_does_not_load_torch():
    """The file sensor watches a folder: importing it must not pull in torch or open_clip."""
    code = "import sys, pipelines.sensors; print(sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
