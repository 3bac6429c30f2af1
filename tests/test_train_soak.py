"""The soak command (python -m train.soak) runs the quick start and reads the trainer's memory every epoch."""
import re

from train_helpers import cli


def test_the_soak_reads_the_trainers_memory_at_every_epoch_and_says_whether_it_stayed_flat():
    result = cli('-epochs', '3', '-threads', '1', module='train.soak')
    assert result.returncode in (0, 1), result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith('$ python -m train.classify -cfg configs/quickstart.yaml -set num_samples=64 '
                               '-set num_test_samples=32 -epochs 3 -out-dir TMP/run -threads 1')
    epochs = [re.fullmatch(r'epoch (\d): RSS (\d+) MiB, peak in the epoch (\d+) MiB', line) for line in lines]
    epochs = [m for m in epochs if m]
    assert [int(m.group(1)) for m in epochs] == [0, 1, 2]
    assert all(100 < int(m.group(2)) <= int(m.group(3)) < 100_000 for m in epochs), lines  # MiB of a live trainer
    assert re.search(r"each epoch's peak RSS, epochs 1 to 2: \d+-\d+ MiB", result.stdout)
    assert lines[-1] == f"each epoch's peak: {'flat' if result.returncode == 0 else 'NOT flat'} (within 5%)"
