import subprocess
import sys


def test_core_imports_no_gui_model_or_capture_library():
    code = ("import sys, mneme.core, mneme.core.assistant, mneme.core.memory;"
            "bad = [m for m in ('PySide6', 'llama_cpp', 'pytesseract', 'mss', 'pynput', "
            "'mneme.app', 'mneme.capture', 'mneme.models') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_llama_cpp_imported_only_in_models_llama():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    users = [p.relative_to(root).as_posix() for d in ("app", "core", "capture", "models")
             for p in (root / d).rglob("*.py") if "import llama_cpp" in p.read_text()
             or "from llama_cpp" in p.read_text()]
    assert users == ["models/llama.py"]


def _imports(folder):
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    for path in (root / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield path.name, [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield path.name, [node.module]


def test_layers_point_one_way():
    """core imports no other layer; capture and models never import the app or Qt."""
    rules = {"core": ("mneme.app", "mneme.capture", "mneme.models", "PySide6", "llama_cpp",
                      "pytesseract", "mss", "pynput"),
             "capture": ("mneme.app", "PySide6", "llama_cpp", "mneme.models"),
             "models": ("mneme.app", "mneme.capture", "PySide6", "mss", "pytesseract")}
    bad = [(folder, name, mod) for folder, banned in rules.items() for name, mods in _imports(folder)
           for mod in mods if mod.startswith(banned)]
    assert bad == []
