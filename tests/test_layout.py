"""The layout's rules, read from the code: one home for the model folder's facts, and no circle of imports."""
import ast
import re
from pathlib import Path

from pipeline import artifact

ROOT = Path(__file__).resolve().parents[1]
# the code outside the tests (experiments write files of their own, not model folders)
SOURCES = sorted(path for folder in (ROOT, ROOT / "pipeline", ROOT / "pipeline" / "formats", ROOT / "serving",
                                     ROOT / "benchmarks") for path in folder.glob("*.py"))
FOLDER_FILE_NAMES = (*artifact.ARTIFACT_FILES, artifact.FAMILIARITY_FILE, artifact.ENCODER_GRAPH_FILE,
                     artifact.ENCODER_WEIGHTS_PATTERN, *artifact.REPORT_FILES, "encoder-{")


def code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings, with their line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_model_folders_file_names_and_size_limit_are_written_only_in_artifact():
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for path in SOURCES if path != ROOT / "pipeline" / "artifact.py"
             for line, text in code_strings(path)
             if any(name in text for name in FOLDER_FILE_NAMES) or re.search(r"\b25 ?MB\b", text)]
    assert found == []


def test_the_pipeline_imports_no_circle_and_nothing_above_it():
    """pipeline/ imports only itself and outside packages: not the app, serving/ or the entry points;
    and no module of it reaches itself again through its imports."""
    modules = {path: f"pipeline.{path.relative_to(ROOT / 'pipeline').with_suffix('').as_posix().replace('/', '.')}"
               .removesuffix(".__init__") for path in (ROOT / "pipeline").rglob("*.py")}
    imports = {}
    for path, name in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules.values() else base
                          for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        top_level = {module.split(".")[0] for module in found}
        assert not top_level & {"app", "serving", "benchmarks", "train", "evaluate", "caption", "bench"}, name
        imports[name] = {module for module in found if module in modules.values() and module != name}

    def reaches(start, goal, seen):
        return any(module == goal or (module not in seen and reaches(module, goal, seen | {module}))
                   for module in imports[start])

    circles = sorted(name for name in imports if name != "pipeline" and reaches(name, name, set()))
    assert circles == []
