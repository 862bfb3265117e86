"""The package's layers (docs/architecture.md §Layers): every import statement in wsmooth_ext goes down.

Read from the source with ``ast`` (deferred imports inside functions included), so an upward import fails here
even when no test happens to execute it. Also: every public name of ``wsmooth_ext`` resolves.
"""

import ast
import pathlib

import wsmooth_ext

ROOT = pathlib.Path(wsmooth_ext.__file__).parent
# rank of each layer package: a module may import its own package and packages of lower rank only
RANK = {"core": 0, "inputs": 1, "attacks": 2, "training": 3, "runs": 3, "analysis": 4, "experiments": 5,
        "commands": 6, "cli": 6}
PACKAGE_LEVEL = {"_C", "__version__"}  # the compiled library and the version string, at the package's top


def _imports(path: pathlib.Path):
    """(line, absolute module or package-level name) of every wsmooth_ext import in the file at ``path``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = ["wsmooth_ext"] + parts[:-1]  # the package a relative import starts from (also for __init__)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "wsmooth_ext":
                continue
            names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            yield from ((node.lineno, name) for name in names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "wsmooth_ext")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        source = parts[0] if len(parts) > 1 or parts[0] == "cli" else None
        if source is None:  # __init__.py and __main__.py of the package: the public face, may import anything
            continue
        for line, target in _imports(path):
            layer = _layer(target)
            if layer == source or layer in PACKAGE_LEVEL or layer == "":
                continue
            if source == "infra":
                found.append(f"{path.relative_to(ROOT)}:{line} infra imports {target} (infra imports nothing)")
            elif layer == "infra":
                continue
            elif layer not in RANK:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}, a module outside the layers")
            elif RANK[layer] >= RANK[source] and not {source, layer} <= {"commands", "cli"}:
                found.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({layer}): not below")
    return found


def test_every_import_goes_down_the_layers():
    assert _violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    # the same walk over a copy of core/ with one upward import added must report it
    import shutil
    fake_root = tmp_path / "wsmooth_ext"
    shutil.copytree(ROOT / "core", fake_root / "core")
    (fake_root / "core" / "noises.py").write_text((ROOT / "core" / "noises.py").read_text()
                                                  + "\nfrom ..experiments import engine\n")
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    assert any("core/noises.py" in v and "wsmooth_ext.experiments" in v for v in _violations())


def test_the_public_names_stay():
    for name in wsmooth_ext.__all__:
        assert getattr(wsmooth_ext, name) is not None
