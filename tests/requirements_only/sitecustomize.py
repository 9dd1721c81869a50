"""Python as if only one requirements file had been installed (tests/test_requirements.py).

Put this folder on PYTHONPATH and name the file in $ONLY_REQUIREMENTS: importing a module of any
installed distribution that the file (with its -r includes) does not bring in, directly or as a
dependency, then raises ImportError, as it would in a virtual environment made from that file.
"""
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_name(requirement: str) -> str:
    return canonical(re.split(r"[\s=<>!~;\[]", requirement.strip(), maxsplit=1)[0])


def installed_by(requirements_file: Path) -> set[str]:
    """The distributions that `pip install -r requirements_file` installs."""
    names, files = set(), [requirements_file]
    while files:
        path = files.pop()
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                files.append(path.parent / line[3:].strip())
            elif line:
                names.add(project_name(line))
    todo = list(names)
    while todo:
        try:
            requires = importlib.metadata.requires(todo.pop()) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:  # an optional part nobody asked for
                continue
            name = project_name(requirement)
            if name not in names:
                names.add(name)
                todo.append(name)
    return names


class NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the blocked modules with a spec that has no origin, as libraries probing for optional
    packages (importlib.util.find_spec) read as absent, and whose import fails as a missing one's."""

    def __init__(self, modules: set[str], requirements_file: str):
        self.modules, self.requirements_file = modules, requirements_file

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.modules:
            return importlib.machinery.ModuleSpec(name, self, origin=None)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (not installed by {self.requirements_file})",
                                  name=spec.name)

    def exec_module(self, module):
        pass


if os.environ.get("ONLY_REQUIREMENTS"):
    allowed = installed_by(Path(os.environ["ONLY_REQUIREMENTS"]))
    blocked = {module for module, distributions in importlib.metadata.packages_distributions().items()
               if not any(canonical(d) in allowed for d in distributions)}
    sys.meta_path.insert(0, NotInstalled(blocked, os.environ["ONLY_REQUIREMENTS"]))
