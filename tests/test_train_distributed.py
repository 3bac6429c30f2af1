"""torchrun: DistributedDataParallel on the CPU (gloo), identical ranks, exact test metrics, Ctrl-C."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import torch

from train.distributed import DUMP_ENV, ShardSampler

from train_helpers import ROOT, cli, free_port, tiny_config


def test_two_process_torchrun_trains_with_identical_parameters_on_both_ranks(tmp_path):
    config = tiny_config(tmp_path, epochs=1, num_test_samples=15)
    dumps = tmp_path / 'dumps'
    result = cli('-cfg', config, launcher=('-m', 'torch.distributed.run', '--nproc_per_node=2',
                                           f'--master_port={free_port()}'), env={DUMP_ENV: str(dumps)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert '2 process(es)' in result.stdout
    assert 'E-I Init: parameters identical on all 2 ranks' in result.stdout
    assert result.stdout.count('epoch 0: train loss') == 1  # only rank 0 logs
    for stage in ('init', 'final'):
        rank0, rank1 = (torch.load(dumps / f'rank{r}_{stage}.pth', weights_only=True) for r in (0, 1))
        assert rank0.keys() == rank1.keys()
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (stage, key)
    init, final = (torch.load(dumps / f'rank0_{s}.pth', weights_only=True) for s in ('init', 'final'))
    assert all(bool(v) for k, v in init.items() if k.endswith('initialized'))
    assert not torch.equal(init['features.0.layer.weight_ee'], final['features.0.layer.weight_ee'])  # it trained
    saved = torch.load(tmp_path / 'run' / 'checkpoint_latest.pth', weights_only=True)
    assert all(torch.equal(saved['model'][k], final[k]) for k in final)
    assert len(saved['rng']) == 2  # every rank's RNG states, for an exact resume
    assert sorted(p.name for p in (tmp_path / 'run').glob('*.pth')) == ['checkpoint_latest.pth', 'checkpoint_max.pth']
    # every one of the 15 test samples counted once (padding to 16 would give multiples of 6.25%)
    test_acc = re.search(r'test loss [\d.]+ acc@1 ([\d.]+) acc@5 ([\d.]+)', result.stdout).groups()
    assert all(abs(float(a) * 0.15 - round(float(a) * 0.15)) < 0.01 for a in test_acc), test_acc


def test_test_shards_cover_every_sample_exactly_once():
    data = list(range(15))
    shards = [list(ShardSampler(data, rank, 4)) for rank in range(4)]
    assert sorted(i for shard in shards for i in shard) == data
    assert [len(ShardSampler(data, rank, 4)) for rank in range(4)] == [4, 4, 4, 3]


def workers(launcher: subprocess.Popen) -> list:
    """The process ids of the trainer processes a torchrun launcher started."""
    children = open(f'/proc/{launcher.pid}/task/{launcher.pid}/children').read().split()
    return [int(pid) for pid in children if b'train.classify' in open(f'/proc/{pid}/cmdline', 'rb').read()]


def test_sigterm_to_one_torchrun_worker_stops_both_ranks_at_the_same_step_with_one_message(tmp_path):
    """A signal that reaches rank 1 alone (rank 0 is in a collective meanwhile): both ranks stop after
    the same step, rank 0 writes its checkpoint and alone says so."""
    config = tiny_config(tmp_path, num_samples=1_000_000)  # an epoch 0 that outlasts the test
    run, out, err = tmp_path / 'run', tmp_path / 'out.txt', tmp_path / 'err.txt'
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
               '-m', 'train.classify', '-cfg', str(config)]
    with open(out, 'w') as stdout, open(err, 'w') as stderr:
        launcher = subprocess.Popen(command, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)}, stdout=stdout,
                                    stderr=stderr)
    try:
        end = time.time() + 300
        while 'parameters identical on all 2 ranks' not in out.read_text() and time.time() < end:
            time.sleep(0.2)
        rank0 = int((run / '.lock').read_text())  # rank 0 holds the folder's lock
        rank1, = set(workers(launcher)) - {rank0}
        os.kill(rank1, signal.SIGTERM)
        launcher.wait(timeout=120)
    finally:
        launcher.terminate()  # torchrun stops its workers (each in a session of its own) if anything is left
        launcher.wait(timeout=120)
    text = err.read_text()
    latest = run / 'checkpoint_latest.pth'
    stops = re.findall(rf'stopped by SIGTERM at epoch 0, step (\d+) of 62500; continue with -resume '
                       rf'{re.escape(str(latest))}, with 2 processes again \(torchrun --nproc_per_node=2\)\n', text)
    assert len(stops) == 1 and text.count('stopped by') == 1, text[-3000:]
    assert text.count('Traceback') == 1, text[-3000:]  # torchrun's own report of the stopped workers, no rank's
    saved = torch.load(latest, weights_only=True)
    assert saved['epoch'] == -1 and saved['step'] == int(stops[0]) and len(saved['rng']) == 2
    # both ranks trained exactly the steps of the checkpoint, 8 samples each
    assert [part['sums'][0] for part in saved['partial']] == [8 * saved['step']] * 2
    assert [len(part['losses']) for part in saved['partial']] == [saved['step']] * 2


def nodes(rendezvous: list, config, tmp_path, *flags, cwds=(ROOT, ROOT), env=None) -> list:
    """Two torchrun "machines" of one process each on the loopback: their ``(exit status, stdout, stderr)``."""
    launched = []
    for node, cwd in enumerate(cwds):
        out, err = tmp_path / f'node{node}.out', tmp_path / f'node{node}.err'
        with open(out, 'w') as stdout, open(err, 'w') as stderr:
            launched.append((subprocess.Popen(
                [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1',
                 *[arg.format(node=node) for arg in rendezvous], '-m', 'train.classify', '-cfg', str(config), *flags],
                cwd=cwd, env={**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})}, stdout=stdout, stderr=stderr),
                out, err))
    for process, *_ in launched:
        process.wait(timeout=600)
    return [(process.returncode, out.read_text(), err.read_text()) for process, out, err in launched]


def test_two_nodes_with_the_c10d_rendezvous_train_with_identical_parameters(tmp_path):
    config = tiny_config(tmp_path, epochs=1, num_samples=48)
    dumps = tmp_path / 'dumps'
    ran = nodes(['--rdzv_backend=c10d', f'--rdzv_endpoint=127.0.0.1:{free_port()}', '--rdzv_id=two-nodes'], config,
                tmp_path, env={DUMP_ENV: str(dumps)})
    assert [status for status, *_ in ran] == [0, 0], [err[-2000:] for *_, err in ran]
    out = ''.join(out for _, out, _ in ran)
    assert out.count('2 process(es)') == 1 and out.count('epoch 0: train loss') == 1  # rank 0 alone logs
    rank0, rank1 = (torch.load(dumps / f'rank{r}_final.pth', weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = torch.load(tmp_path / 'run' / 'checkpoint_latest.pth', weights_only=True)
    assert all(torch.equal(saved['model'][k], rank0[k]) for k in rank0) and len(saved['rng']) == 2


def test_resuming_on_two_machines_that_do_not_share_the_run_folder_is_one_clear_error(tmp_path):
    """Node 1 works in another folder, so the relative -resume path names no file there: the folder of a
    run resumed on several machines must be shared; rank 0 says so, naming the rank that cannot read it."""
    from sj_ei import config as cfg
    from train import checkpoint
    config = tiny_config(tmp_path, epochs=2)
    (tmp_path / 'run').mkdir()
    checkpoint.save(tmp_path / 'run' / 'checkpoint_latest.pth', model={}, optimizer={}, scheduler={}, scaler={},
                    epoch=0, best_acc1=0.0, config=cfg.load(config), rng=[checkpoint.rng_states()] * 2)
    (tmp_path / 'elsewhere').mkdir()
    ran = nodes(['--node_rank={node}', '--master_addr=127.0.0.1', f'--master_port={free_port()}'], config, tmp_path,
                '-resume', 'run/checkpoint_latest.pth', cwds=(tmp_path, tmp_path / 'elsewhere'))
    errors = [line for *_, err in ran for line in err.splitlines() if line.startswith('error:')]
    assert errors == [f'error: rank 1 (on {socket.gethostname()}) cannot resume: checkpoint run/checkpoint_latest.pth '
                      'does not exist. On several machines the run folder (run, rank 0\'s out_dir, where the '
                      'checkpoints are written) must be on a filesystem that every machine reads at the same path'], \
        [err[-2000:] for *_, err in ran]
    assert all(status != 0 for status, *_ in ran)
