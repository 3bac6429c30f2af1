"""The house drawn from the imports (read with ``ast``): the library ``sj_ei`` never
imports its application ``train`` (nor installs it), its modules import each other without a cycle, and no module uses
another's private names (a leading underscore; dunder names are public).  ``sj_ei._compat`` is a private
module whose public names (``from ._compat import SJ_MAJOR``, ``_compat.SJ_MAJOR``) the others use."""
import ast
import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

import sj_ei

ROOT = Path(__file__).resolve().parent.parent


def modules(package: str) -> dict:
    """``{dotted name: ast tree}`` of every module of ``package`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted((ROOT / package).rglob('*.py')):
        parts = path.relative_to(ROOT).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = (ast.parse(path.read_text()), path.name == '__init__.py')
    return found


SJ_EI = modules('sj_ei')
TRAIN = modules('train')


def imports(name: str, tree: ast.AST, is_package: bool):
    """``(module, imported name or None, line)`` of every import in ``tree`` (also those inside functions),
    relative imports resolved; ``from . import x`` of a submodule ``x`` gives ``(package.x, None)``."""
    here = name if is_package else name.rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition('.')[0]
            module = (f'{base}.{node.module}' if node.module else base) if node.level else node.module
            for alias in node.names:
                if f'{module}.{alias.name}' in SJ_EI:
                    yield f'{module}.{alias.name}', None, node.lineno
                else:
                    yield module, alias.name, node.lineno


def private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def defined(tree: ast.AST) -> set:
    """The private names ``tree`` defines: functions, classes, assigned names and attributes
    (``self._x = ...``), and the aliases it imports under (``import x as _x``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if private(n)}


def test_the_library_never_imports_the_trainer():
    found = [f'{name}:{line} imports {module}' for name, (tree, package) in SJ_EI.items()
             for module, _, line in imports(name, tree, package) if module.split('.')[0] == 'train']
    assert not found, found


def test_only_the_library_is_installed():
    """``pip install`` brings ``sj_ei``; the trainer runs from the repository (no top-level ``train`` in
    site-packages), and the tests import it from there."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    assert setup['options.packages.find']['include'].split() == ['sj_ei', 'sj_ei.*']
    assert setup['tool:pytest']['pythonpath'].split('#')[0].strip() == '.'


def test_importing_every_sj_ei_module_leaves_train_unimported():
    modules = [m.name for m in pkgutil.walk_packages(sj_ei.__path__, 'sj_ei.')
               if m.name != 'sj_ei.op_counter']  # spikingjelly 2 only
    probe = f'import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint("train" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert 'sj_ei.analyze' in modules and 'sj_ei.ops' in modules and 'sj_ei.config' in modules
    assert result.stdout.strip() == 'False'


def test_sj_ei_modules_import_each_other_without_a_cycle():
    graph = {name: {m for m, _, _ in imports(name, tree, package) if m in SJ_EI and m != name}
             for name, (tree, package) in SJ_EI.items()}
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for other in sorted(graph[node]):
            visit(other)
        path.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_no_module_uses_a_private_name_of_another():
    """Neither ``from .layers import _x`` nor ``layers._x`` nor ``layer._x`` (an attribute that only
    other modules define), in sj_ei and in the trainer."""
    own = {name: defined(tree) for name, (tree, _) in {**SJ_EI, **TRAIN}.items()}
    library_private = set().union(*(own[name] for name in SJ_EI))
    found = []
    for name, (tree, package) in {**SJ_EI, **TRAIN}.items():
        for module, imported, line in imports(name, tree, package):
            if module.startswith('sj_ei') and imported and private(imported):
                found.append(f'{name}:{line} imports {imported} from {module}')
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own[name] \
                    and node.attr in library_private and node.attr != '_compat':
                found.append(f'{name}:{node.lineno} uses .{node.attr}')
    assert not found, '\n'.join(found)
