""".ci/gpu-check stays inside what the GPU machine allows (its run on a CPU is
``GPU_CHECK_DRY_RUN=1 bash .ci/gpu-check DIR``, too slow for the suite): step budgets adding
up to at most 8 minutes, at most 8 result files, and the spikingjelly wheels it needs."""
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = (ROOT / '.ci' / 'gpu-check').read_text()


def test_the_step_budgets_add_up_to_at_most_eight_minutes_as_the_header_says():
    steps = re.findall(r'^\s*(?:\S+=\S+ )?step ("[^"]+"|\S+) (\d+) ', SCRIPT, flags=re.M)
    gpu_backends = re.findall(r'BACKENDS=\((.*)\)', SCRIPT)[-1]  # the GPU run's (the dry run's comes first)
    runs = {name: len(re.findall(r'"[^"]+"', gpu_backends)) if name.startswith('"train') else 1 for name, _ in steps}
    total = sum(int(budget) * runs[name] for name, budget in steps)
    assert [name for name, _ in steps] == ['env', 'tests', 'parity', 'memcheck', 'bench-cifar', 'bench-dvs',
                                           'neurons', '"train $backend"', 'bench-sj2']
    assert total <= 480 and f'{total} in all' in SCRIPT and int(re.search(r'BUDGET:-(\d+)', SCRIPT)[1]) <= 480


def test_at_most_eight_result_files_and_each_is_cleared_first():
    cleared = re.search(r'rm -f "\$RESULTS"/\{([^}]*)\}', SCRIPT)[1].split(',')
    written = set(re.findall(r'\$RESULTS/([\w.-]+)', SCRIPT))
    assert len(cleared) <= 8 and written == set(cleared)


def test_the_wheels_it_carries_are_made_by_gpu_wheels_into_an_ignored_folder():
    wheels = (ROOT / '.ci' / 'gpu-wheels').read_text()
    assert 'DEST=.gpu-wheels' in wheels and 'WHEELS=$ROOT/.gpu-wheels' in SCRIPT
    assert '/.gpu-wheels/' in (ROOT / '.gitignore').read_text().split()
    assert 'carry=[".gpu-wheels"]' in SCRIPT
    for release in ('sj0', 'sj2'):
        assert f'fetch {release} spikingjelly==' in wheels and f'on {release}' in SCRIPT
