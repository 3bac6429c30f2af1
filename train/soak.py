"""Soak: the quick start for many short epochs in one process, and its resident memory (RSS) at
every epoch, so that a leak over a long run shows before a 300-epoch run meets it.

    python -m train.soak [-epochs 150] [-threads N] [-keep DIR]

runs ``python -m train.classify -cfg configs/quickstart.yaml -set num_samples=64
-set num_test_samples=32 -epochs 150`` (2 steps per epoch) in a temporary folder, reads the
trainer's resident memory (its processes together, ``/proc``) at every epoch line: now, and the
peak within the epoch; prints one line per tenth of the run, both from epoch 1 (the second; the
first grows while allocators and caches fill) to the last, and the verdict: whether each epoch's
peak stayed within 5% (exit status 0) or not (1).  The RSS at an epoch line also moves with where
the trainer is in its next step and with the allocator giving memory back (about 10% here); each
epoch's peak does not, and a leak raises it."""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

#: the RSS may vary by this share from epoch 1 to the last and still count as flat
FLAT = 0.05


def memory(pid: int) -> tuple:
    """``(resident bytes now, peak resident bytes since the last call)`` of process ``pid`` and its
    descendants; resets the peak (``/proc/PID/clear_refs``). ``(0, 0)`` for a process that has ended."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
        children = Path(f'/proc/{pid}/task/{pid}/children').read_text().split()
        Path(f'/proc/{pid}/clear_refs').write_text('5')
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    kb = {line.split(':')[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith('Vm')}
    now, peak = kb.get('VmRSS', 0) * 1024, kb.get('VmHWM', 0) * 1024
    for child in children:
        now, peak = (a + b for a, b in zip((now, peak), memory(int(child))))
    return now, peak


def soak(epochs: int, threads, folder: Path) -> list:
    """The trainer's ``(RSS, peak RSS since the last epoch line)`` (bytes) at each epoch line of the quick
    start run for ``epochs`` short epochs."""
    command = [sys.executable, '-m', 'train.classify', '-cfg', 'configs/quickstart.yaml', '-set', 'num_samples=64',
               '-set', 'num_test_samples=32', '-epochs', str(epochs), '-out-dir', str(folder / 'run')]
    command += ['-threads', str(threads)] if threads else []
    print('$', ' '.join(['python', *command[1:]]).replace(str(folder), 'TMP'), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    sizes = []
    for line in process.stdout:
        if line.startswith('epoch '):
            sizes.append(memory(process.pid))
            if len(sizes) % max(1, epochs // 10) == 0 or len(sizes) in (1, 2):
                print(f'epoch {len(sizes) - 1}: RSS {sizes[-1][0] / 2 ** 20:.0f} MiB, peak in the epoch '
                      f'{sizes[-1][1] / 2 ** 20:.0f} MiB', flush=True)
        elif not line.startswith('note:'):
            print(line, end='', flush=True)
    if process.wait():
        sys.exit(f'the trainer failed (exit status {process.returncode})')
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m train.soak', description=__doc__.split('\n\n')[0])
    parser.add_argument('-epochs', type=int, default=150, help='epochs of 2 steps (default 150)')
    parser.add_argument('-threads', type=int, help="the trainer's -threads (default: its own)")
    parser.add_argument('-keep', metavar='DIR', help='run in DIR (kept) instead of a temporary folder')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = soak(args.epochs, args.threads, Path(args.keep or tmp))
    for name, values in (('RSS at the epoch lines', [now for now, _ in sizes[1:]]),
                         ("each epoch's peak RSS", [peak for _, peak in sizes[1:]])):
        low, high = min(values), max(values)
        spread = (high - low) / low
        print(f'{name}, epochs 1 to {len(sizes) - 1}: {low / 2 ** 20:.0f}-{high / 2 ** 20:.0f} MiB (first '
              f'{values[0] / 2 ** 20:.0f}, last {values[-1] / 2 ** 20:.0f}), spread {100 * spread:.1f}%', flush=True)
    flat = spread <= FLAT  # the peaks': the RSS at a line moves with the allocator's trimming
    print(f"each epoch's peak: {'flat' if flat else 'NOT flat'} (within {100 * FLAT:.0f}%)", flush=True)
    return 0 if flat else 1


if __name__ == '__main__':
    sys.exit(main())
