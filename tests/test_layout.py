"""The floor plan holds: each dvc.yaml stage runs its own module of stages/ and declares as deps every project
module that module imports (so a code change reruns the stages it affects), project modules import each other
without cycles, the product never imports the lab (bench/), and modules and functions stay short."""
import ast
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PROJECT = ("stages", "bench")


def module_file(name: str) -> Path | None:
    """The file of project module `name` (a package's __init__.py), None if it is not one."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[str]:
    """Project modules `path` imports, at the top or inside a function; `from pkg import name` counts `pkg.name`
    when that is a module."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return {n for n in names if n.split(".")[0] in PROJECT and module_file(n)}


def with_parents(name: str) -> list[str]:
    """Importing `stages.a.b` runs stages/__init__.py and stages/a/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(name: str) -> set[Path]:
    """Every project file that running module `name` can execute. Importing a package counts its whole folder:
    a package may load its modules by name (stages/dataset/formats does); its parents count their __init__.py."""
    seen, todo, files = set(), [name], set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = module_file(mod)
        found = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" and mod != name else [path]
        found += [module_file(parent) for parent in with_parents(mod)[:-1]]
        files |= set(found)
        todo += [m for f in found for m in imported(f)]
    return files


def has_code(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return bool(body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                else body)


def stages() -> dict[str, dict]:
    """Stage name -> its spec (a foreach stage's `do` block, `${item}` left in)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: s.get("do", s) for name, s in spec.items()}


def stage_module(cmd: str) -> str:
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"], f"{cmd!r}: expected `python -m stages.<stage> ...`"
    return argv[2]


@pytest.mark.parametrize("stage", list(stages()))
def test_each_stage_runs_its_own_module(stage):
    module = stage_module(stages()[stage]["cmd"])
    assert module == f"stages.{stage.split('_')[0]}" or module == f"stages.{stage}", (
        f"stage {stage} runs {module}; expected stages.{stage} (one module per stage, named as the stage)")


def test_stages_folder_holds_the_stages_common_and_packages_only():
    modules = {stage_module(s["cmd"]) for s in stages().values()}
    loose = [p.name for p in (ROOT / "stages").glob("*.py")
             if p.name not in ("__init__.py", "common.py") and f"stages.{p.stem}" not in modules]
    assert not loose, f"stages/{loose}: not a dvc.yaml stage; helpers belong in a package, commands in stages/commands"


@pytest.mark.parametrize("stage", list(stages()))
def test_deps_cover_every_module_the_stage_imports(stage):
    spec = stages()[stage]
    declared = [ROOT / d for d in spec.get("deps", []) if "${" not in d]
    files = closure(stage_module(spec["cmd"]))
    missing = sorted(str(f.relative_to(ROOT)) for f in files
                     if has_code(f) and not any(f == d or d in f.parents for d in declared))
    assert not missing, f"stage {stage} runs code it does not declare as deps: {missing}"


def test_the_closure_sees_nested_and_package_imports():
    """The resolver itself: model's builder is imported inside a function, build's formats by name."""
    assert ROOT / "stages/tiny_model/build.py" in closure("stages.model")
    assert ROOT / "stages/dataset/formats/qa_jsonl.py" in closure("stages.build")
    assert ROOT / "stages/compare.py" not in closure("stages.score")


def project_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for top in PROJECT for p in (ROOT / top).rglob("*.py") if "tests" not in p.parts)


def test_no_import_cycles():
    graph = {m: {i for i in imported(module_file(m))} - {m} for m in project_modules()}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != "open", f"import cycle: {' -> '.join(path[path.index(n):] + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_the_product_does_not_import_the_lab():
    product = [p for p in (ROOT / "stages").rglob("*.py")] + [p for p in (ROOT / "tests").rglob("*.py")]
    leaks = [str(p.relative_to(ROOT)) for p in product if any(m.split(".")[0] == "bench" for m in imported(p))]
    assert not leaks, f"{leaks} import bench/: the lab may import the product, never the other way round"


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    for p in (ROOT / "stages").rglob("*.py"):
        src = p.read_text(encoding="utf-8")
        if len(src.splitlines()) > 200:
            long_modules.append(f"{p.relative_to(ROOT)} ({len(src.splitlines())} lines)")
        long_functions += [f"{p.relative_to(ROOT)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
                           for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and n.end_lineno - n.lineno + 1 > 50]
    assert not long_modules and not long_functions, (long_modules, long_functions)
