"""The house limits on code shape, read from the source with `ast`: no file over
MAX_FILE_LINES lines and no function or method (async included) over MAX_FUNCTION_LINES,
in sdod/, plugins/ and dags/. A function's size runs from its `def` to its last line
(decorators not counted). A failure lists every offender as path:line and its size.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("sdod", "plugins", "dags")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50

# Files another engineer is reworking right now (issue 34), exempt as a whole (their length
# and every function in them) until that work lands; the test fails once an entry is
# within the limits, so the list only shrinks.
PENDING: frozenset[str] = frozenset()


def sources() -> list[Path]:
    """Every Python file under FOLDERS."""
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def offenders(path: Path, root: Path = ROOT) -> list[str]:
    """`path:line` (relative to `root`) and the size of the file, and of each function,
    over its limit."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    found = []
    lines = len(text.splitlines())
    if lines > MAX_FILE_LINES:
        found.append(f"{name}:1: file of {lines} lines (limit {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                what = f"function {node.name} of {size} lines (limit {MAX_FUNCTION_LINES})"
                found.append(f"{name}:{node.lineno}: {what}")
    return found


def test_files_and_functions_within_the_limits() -> None:
    found = [
        line
        for path in sources()
        if path.relative_to(ROOT).as_posix() not in PENDING
        for line in offenders(path)
    ]
    assert not found, "over the house limits (split by job, see STYLE.md):\n" + "\n".join(found)


def test_pending_files_still_need_their_exemption() -> None:
    missing = sorted(name for name in PENDING if not (ROOT / name).is_file())
    done = sorted(
        name for name in PENDING if (ROOT / name).is_file() and not offenders(ROOT / name)
    )
    assert not missing, f"PENDING names files that do not exist: {missing}"
    assert not done, f"within the limits now: remove them from PENDING: {done}"


def test_the_checker_finds_long_files_and_functions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long = tmp_path / "long.py"
    long.write_text(f"@decorator\nasync def f():\n{body}\n" + "\n" * MAX_FILE_LINES)
    short = tmp_path / "short.py"
    short.write_text(f"@decorator\ndef g():\n{body[: body.rindex(chr(10))]}\n")
    assert offenders(short, tmp_path) == []
    assert offenders(long, tmp_path) == [
        f"long.py:1: file of {2 + MAX_FUNCTION_LINES + MAX_FILE_LINES} lines (limit 400)",
        f"long.py:2: function f of {1 + MAX_FUNCTION_LINES} lines (limit 50)",
    ]
