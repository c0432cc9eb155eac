"""The dependency rules of the package layout (shared/design.md), read from the import statements."""

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("centermask", "sipmask", "stmask")
PACKAGES = ("onestage", *METHODS, "vis_eval")


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def imports_of(package: str) -> dict[Path, set[str]]:
    return {p: imported_modules(p) for p in sorted((REPO_ROOT / package).rglob("*.py"))}


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("method", METHODS)
def test_no_method_imports_another(method):
    others = set(METHODS) - {method}
    bad = {str(p): sorted(m for m in mods if top(m) in others) for p, mods in imports_of(method).items()}
    assert not {p: m for p, m in bad.items() if m}


def test_core_imports_no_method():
    bad = {str(p): sorted(m for m in mods if top(m) in METHODS) for p, mods in imports_of("onestage").items()}
    assert not {p: m for p, m in bad.items() if m}


def test_vis_eval_imports_neither_core_nor_methods():
    banned = {"onestage", *METHODS}
    bad = {str(p): sorted(m for m in mods if top(m) in banned) for p, mods in imports_of("vis_eval").items()}
    assert not {p: m for p, m in bad.items() if m}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_module_of_a_sibling_package(package):
    siblings = set(PACKAGES) - {package}
    bad = {
        str(p): sorted(
            m for m in mods if top(m) in siblings and any(part.startswith("_") for part in m.split("."))
        )
        for p, mods in imports_of(package).items()
    }
    assert not {p: m for p, m in bad.items() if m}


def test_the_checker_sees_absolute_and_relative_imports(tmp_path):
    probe = tmp_path / "sipmask" / "modeling" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import centermask\nfrom centermask.modeling import CenterROIHeads\nfrom ..data import _x\n"
    )
    mods = imported_modules(probe, root=tmp_path)
    assert {"centermask", "centermask.modeling.CenterROIHeads", "sipmask.data._x"} <= mods
