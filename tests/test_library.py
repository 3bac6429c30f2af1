"""The library does not import its application: no module of sj_ei imports the trainer
(``train``); what both need (the config, the networks of a config) lives in sj_ei."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import sj_ei

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_of_sj_ei_imports_train():
    for path in sorted((ROOT / 'sj_ei').rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n == 'train' or n.startswith('train.') for n in names), f'{path} imports {names}'


def test_importing_every_sj_ei_module_leaves_train_unimported():
    modules = [m.name for m in pkgutil.walk_packages(sj_ei.__path__, 'sj_ei.')
               if m.name != 'sj_ei.op_counter']  # spikingjelly 2 only
    probe = f'import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint("train" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert 'sj_ei.analyze' in modules and 'sj_ei.ops' in modules and 'sj_ei.config' in modules
    assert result.stdout.strip() == 'False'
