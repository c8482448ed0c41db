"""The package's imports run one way: scripts -> training -> callbacks ->
export -> data -> models -> metrics -> layers, losses, schedules, evaluation ->
ops, distribution -> utils (docs/architecture.md). A subpackage that imports
one above it would tie the lower one to the higher's dependencies and invite
circular imports; this test names the offending file."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent

PACKAGE = Path(__file__).resolve().parents[1] / "keras_dvq"
# Rank of each subpackage or top-level module: imports go to a lower rank or
# stay within the same subpackage.
RANKS = {
    "utils": 0,
    "ops": 1,
    "distribution": 1,
    "evaluation": 2,
    "layers": 2,
    "losses": 2,
    "schedules": 2,
    "metrics": 3,
    "models": 4,
    "data": 5,
    "export": 6,
    "callbacks": 7,
    "training": 8,
}


def imported_parts(path):
    """The keras_dvq subpackages or modules a file imports from."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "keras_dvq"
        ):
            parts = node.module.split(".")
            if len(parts) > 1:
                yield parts[1]
            else:  # `from keras_dvq import layers`
                yield from (alias.name for alias in node.names)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if part != "__init__":
            yield pytest.param(path, part, id=str(path.relative_to(PACKAGE)))


def test_every_part_of_the_package_has_a_rank():
    parts = {path.relative_to(PACKAGE).parts[0] for path in PACKAGE.iterdir()}
    parts = {part.removesuffix(".py") for part in parts} - {"__init__", "__pycache__"}
    assert parts == set(RANKS)


@pytest.mark.parametrize("path, part", modules())
def test_imports_run_downwards(path, part):
    upward = [
        other
        for other in imported_parts(path)
        if other != part and RANKS[other] >= RANKS[part]
    ]
    assert not upward, f"{path.name} ({part}) imports from {upward}"
