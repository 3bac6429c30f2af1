"""The epoch loop: one pass over a loader, training (SGD step, Dale's law through the optimizer's
hook, ``reset_net`` after every batch) or evaluating, with its loss and top-1 / top-5 sums."""
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from sj_ei import datasets


def amp_dtype(device: torch.device) -> torch.dtype:
    """``-amp``'s autocast dtype: bfloat16, whose float32 exponent range needs no loss scaling and
    holds the E-I gradient ``dL/dI_EE = g_E dL/dI_int / I_sh~`` that float16 may not (a small
    ``I_sh~``; docs/benchmarks.md); float16, with the grad scaler, only on GPUs without bfloat16."""
    return torch.float16 if device.type == 'cuda' and not torch.cuda.is_bf16_supported() else torch.bfloat16


def accuracy(logits, labels, k):
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1).float().sum().item()


def forward(model, x, labels, device, amp):
    """``(loss, logits, labels)`` of one batch, on ``device``: cross-entropy of the time-averaged output."""
    x, labels = datasets.model_input(x.to(device, non_blocking=True)), labels.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp):
        logits = model(x).mean(0)
        loss = F.cross_entropy(logits.float(), labels)
    return loss, logits, labels


def run_epoch(model, loader, device, amp, train, optimizer=None, scheduler=None, scaler=None, losses=None,
              progress=None, after_step=None):
    """One pass over ``loader`` (a loader, or an iterator of its batches); returns (samples, loss sum,
    top-1 hits, top-5 hits, seconds).  Appends every batch's loss to ``losses`` (a list) when given;
    calls ``after_step(what it would return now)`` after every training step."""
    model.train(train)
    samples = loss_sum = top1 = top5 = 0.0
    start = time.time()
    with torch.set_grad_enabled(train):
        for x, labels in loader:
            loss, logits, labels = forward(model, x, labels, device, amp)
            if train:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
            functional.reset_net(model)
            n = labels.shape[0]
            samples += n
            batch_loss = loss.item()  # one device sync per batch
            loss_sum += batch_loss * n
            if losses is not None:
                losses.append(batch_loss)
            top1 += accuracy(logits, labels, 1)
            top5 += accuracy(logits, labels, 5)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f'{batch_loss:.3f}', acc1=f'{100 * top1 / samples:.1f}')
            if after_step is not None:
                after_step((samples, loss_sum, top1, top5, time.time() - start))
    return samples, loss_sum, top1, top5, time.time() - start
