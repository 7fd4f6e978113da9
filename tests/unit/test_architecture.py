"""The code keeps its shape: imports follow docs/architecture.md's map, and OpenAI error bodies
and codes have one home each."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("contracts", "services", "infra")
ERRORS_MODULE = Path("services/common/openai_errors.py")


def import_map(markdown: str) -> dict[str, set[str]]:
    """package -> the packages it may import, from the table between the import-map markers."""
    table = markdown.split("<!-- import-map:begin -->")[1].split("<!-- import-map:end -->")[0]
    rules: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        package = re.findall(r"`([^`]+)`", cells[0])[0]
        rules[package] = set(re.findall(r"`([^`]+)`", cells[1]))
    return rules


def package_of(module: str, rules: dict[str, set[str]]) -> str | None:
    """The longest package of the map that `module` is in (or None: not ours). A bare
    top-level name (`services`) is its `__init__` alone, not every module below it."""
    for name in sorted(rules, key=len, reverse=True):
        if module == name or (name != "services" and module.startswith(name + ".")):
            return name
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name


def violations(root: Path, rules: dict[str, set[str]]) -> list[str]:
    """`file:line: a may not import b` for each import the map forbids."""
    found = []
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            module = _module_name(path, root)
            mine = package_of(module, rules)
            if mine is None:
                found.append(f"{path.relative_to(root)}:1: {module} is in no row of the map")
                continue
            allowed = rules[mine]
            tree = ast.parse(path.read_text(), str(path))
            for line, name in _imports(tree, module, path.name == "__init__.py"):
                if name.split(".")[0] not in OURS:
                    continue
                target = package_of(name, rules) or name
                if target != mine and "*" not in allowed and target not in allowed:
                    found.append(f"{path.relative_to(root)}:{line}: {mine} may not import {name}")
    return found


def _rules() -> dict[str, set[str]]:
    return import_map((ROOT / "docs" / "architecture.md").read_text())


class TestImportMap:
    def test_every_import_is_allowed_by_the_map(self) -> None:
        assert violations(ROOT, _rules()) == []

    def test_the_map_names_only_packages_it_has_rows_for(self) -> None:
        rules = _rules()
        assert {"contracts", "services.common", "services.gateway", "infra"} <= set(rules)
        named = set().union(*rules.values()) - {"*"}
        assert named <= set(rules)

    def test_a_forbidden_import_is_reported_with_its_file_and_line(self, tmp_path: Path) -> None:
        gateway = tmp_path / "services" / "gateway"
        gateway.mkdir(parents=True)
        (tmp_path / "contracts").mkdir()
        (tmp_path / "infra").mkdir()
        (gateway / "app.py").write_text(
            '"""x"""\n\nfrom contracts import TOPICS\nfrom services.analytics.store import x\n'
        )
        (gateway / "routes.py").write_text("from . import app\nfrom ..tenants import store\n")
        found = violations(tmp_path, _rules())
        assert found == [
            "services/gateway/app.py:4: services.gateway may not import services.analytics.store"
        ]

    def test_relative_imports_resolve_to_their_package(self, tmp_path: Path) -> None:
        common = tmp_path / "services" / "common"
        common.mkdir(parents=True)
        (common / "x.py").write_text("from ..gateway import app\n")
        found = violations(tmp_path, _rules())
        assert found == ["services/common/x.py:1: services.common may not import services.gateway"]


def _python_files() -> Iterator[Path]:
    for top in ("services", "contracts"):
        yield from sorted((ROOT / top).rglob("*.py"))


class TestOneHomeForErrors:
    def test_only_the_errors_module_builds_an_openai_error_body(self) -> None:
        builders = []
        for path in _python_files():
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Dict):
                    continue
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "error"
                        and (isinstance(value, ast.Name | ast.Call) or _has_type_key(value))
                    ):
                        builders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        assert builders == [f"{ERRORS_MODULE}:{_body_line()}"]

    def test_error_codes_are_enum_members_never_string_literals(self) -> None:
        literals = []
        for path in _python_files():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    for kw in node.keywords:
                        if (
                            kw.arg == "code"
                            and isinstance(kw.value, ast.Constant)
                            and isinstance(kw.value.value, str)
                        ):
                            literals.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        assert literals == []


def _has_type_key(node: ast.AST) -> bool:
    """A dict literal with a "type" key: OpenAI's error body (a Response's `error` has none)."""
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "type" for k in node.keys
    )


def _body_line() -> int:
    tree = ast.parse((ROOT / ERRORS_MODULE).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "error" for k in node.keys
        ):
            return node.lineno
    pytest.fail("the errors module builds no body")
