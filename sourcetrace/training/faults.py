"""Divergence checks for the trainer, and the flags that tell Tune's retry policy what failed.

A diverged run (non-finite loss or embeddings, exploding weights) is a ``DivergenceError`` naming the
epoch and the learning rate. Any ``SourcetraceError`` raised inside a trial (bad data, bad config,
divergence) is deterministic: the trial flags it with ``NO_RETRY`` in one last result (see
``sweep/retry.py``, the Ray side), so it fails once instead of being retried; so does a storage fault (an
unwritable trial folder, a full disk: ``--resume`` once it is fixed). Any other exception of
the code is flagged ``CODE_ERROR``: retried ``max_failures`` times, while a failure without a flag (the
worker or its node was lost) gets the spot-node budget too. No Ray in here: the trainer imports this module.
"""

from __future__ import annotations

import errno

import torch

from sourcetrace.config import Config
from sourcetrace.errors import DivergenceError, SourcetraceError

PARAM_LIMIT = 1e6  # |weight| above this is an explosion: healthy weights of these models stay below ~100
NO_RETRY = "sourcetrace_no_retry"  # result key: the trial's next error is not to be retried
CODE_ERROR = "sourcetrace_code_error"  # result key: the trial's next error is its code's, not a lost worker
FAILURE_FLAGS = (NO_RETRY, CODE_ERROR)  # results carrying one are no epoch's metrics
# A folder that cannot be written or a full disk: a retry would meet it again at once; --resume once it is fixed.
STORAGE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def failure_result(err: BaseException, epoch: int) -> dict[str, float]:
    """The last result a trial reports before re-raising ``err``: its flag, at a mid-epoch (never an epoch's row).

    >>> failure_result(DivergenceError("x"), 3), failure_result(KeyError("x"), 3)
    ({'epoch': 3.5, 'sourcetrace_no_retry': 1.0}, {'epoch': 3.5, 'sourcetrace_code_error': 1.0})
    >>> failure_result(PermissionError(1, "Operation not permitted"), 1)  # the trial's folder cannot be written
    {'epoch': 1.5, 'sourcetrace_no_retry': 1.0}
    """
    storage = isinstance(err, PermissionError) or (isinstance(err, OSError) and err.errno in STORAGE_ERRNOS)
    flag = NO_RETRY if isinstance(err, SourcetraceError) or storage else CODE_ERROR
    return {"epoch": epoch + 0.5, flag: 1.0}


def diverged(cfg: Config, epoch: int, lr_now: float, what: str, step: int | None = None) -> DivergenceError:
    """The error of a diverged run: what went wrong, where, and at which learning rate."""
    fix = "lower train.lr" + ("" if cfg.train.grad_clip > 0 else " or set train.grad_clip")
    if cfg.train.precision in ("fp16", "bf16"):
        fix += " or use train.precision=fp32"
    return DivergenceError(
        f"training diverged: {what} at epoch {epoch}{f', step {step}' if step else ''} "
        f"(train.lr={cfg.train.lr:g}, lr then {lr_now:.3g}, "
        f"loss.name={cfg.loss.name}); {fix}"
    )


class StepGuard:
    """Finiteness of each step's loss and embeddings, recorded on the device and read every ``every`` steps.

    Reading a flag is a host sync on a GPU, so steps only record; ``check`` (every ``every`` steps and at the
    epoch's end) raises ``DivergenceError`` naming the first bad step, its learning rate and the loss there.
    """

    def __init__(self, cfg: Config, epoch: int, device: torch.device, every: int = 25):
        self.cfg, self.epoch, self.every = cfg, epoch, every
        self.first = torch.zeros((), dtype=torch.int64, device=device)  # first bad step, 0 = none yet
        self.loss_bad = torch.zeros((), dtype=torch.bool, device=device)
        self.loss_then = torch.zeros((), dtype=torch.float32, device=device)
        self.lrs: dict[int, float] = {}

    def record(self, step: int, loss: torch.Tensor, emb: torch.Tensor, lr_now: float) -> None:
        loss = loss.detach().float()
        loss_ok = torch.isfinite(loss)
        new = ~(loss_ok & torch.isfinite(emb.detach()).all()) & (self.first == 0)
        self.first = torch.where(new, step, self.first)
        self.loss_bad = torch.where(new, ~loss_ok, self.loss_bad)
        self.loss_then = torch.where(new, loss, self.loss_then)
        self.lrs[step] = lr_now
        if step % self.every == 0:
            self.check()

    def check(self) -> None:
        """Raise for the first non-finite step recorded since the last check (one host sync)."""
        first = int(self.first)
        if first:
            lr_now = self.lrs[first]
            if bool(self.loss_bad):
                raise diverged(self.cfg, self.epoch, lr_now, f"non-finite loss ({float(self.loss_then)})", first)
            raise diverged(self.cfg, self.epoch, lr_now, "non-finite embeddings", first)
        self.lrs.clear()


def check_weights(cfg: Config, modules: list[torch.nn.Module], epoch: int, lr_now: float) -> None:
    """Raise ``DivergenceError`` for a non-finite parameter or buffer, or a weight beyond ``PARAM_LIMIT``."""
    for module in modules:
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            if not bool(torch.isfinite(tensor).all()):
                raise diverged(cfg, epoch, lr_now, f"non-finite values in {name}")
            peak = float(tensor.detach().abs().max())
            if peak > PARAM_LIMIT and isinstance(tensor, torch.nn.Parameter):
                raise diverged(cfg, epoch, lr_now, f"weights exploded (max |{name}| = {peak:.3g})")
