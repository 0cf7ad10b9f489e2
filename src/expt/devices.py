"""Which device a run trains on: ``trainer.device`` and, for parallel sweeps, one GPU a trial.

:func:`choose_device` is the whole rule, a plain function of the requested device, the number of
CUDA devices this process sees and the Hydra job it runs in (:func:`hydra_job`), so it is tested
without a GPU. With ``trainer.device=auto`` a job of a multirun whose launcher runs jobs side by
side (any launcher but those in :data:`ONE_PROCESS`) on a machine with more than one visible CUDA
device gets ``cuda:<job number mod device count>``; everything else gets ``cuda`` (the first device) or
``cpu`` as before. The job number rather than a pool of free devices because it needs no
coordination between the trial processes (nothing to lock, nothing a killed trial leaves held),
works the same under every launcher, and puts a re-run or requeued trial back on the device it
had. Trials of a round train for the same epochs, so with ``n_jobs`` a multiple of the device
count each device holds the same number of trials at a time.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

from expt.errors import ConfigError

KEY = "trainer.device"
# launchers that run a whole batch in one process, one job after the other (Hydra's basic launcher)
# or as one program on one device (expt's population launcher): their jobs keep the first GPU
ONE_PROCESS = ("BasicLauncher", "PopulationLauncher")


def allowed(cuda_count: int) -> str:
    """The values of ``trainer.device`` that this machine can run, for error messages."""
    if cuda_count == 0:
        return "auto or cpu (this machine has no CUDA device)"
    indices = "cuda:0" if cuda_count == 1 else f"cuda:0 to cuda:{cuda_count - 1}"
    return f"auto, cpu, cuda or {indices}"


def choose_device(requested: str, cuda_count: int, job_num: Optional[int] = None,
                  parallel: bool = False, key: str = KEY) -> str:
    """The device a run uses, as a string ``torch.device`` takes.

    ``requested`` is ``trainer.device``; ``cuda_count`` the CUDA devices visible to this process
    (after ``CUDA_VISIBLE_DEVICES``); ``job_num`` the Hydra job number in a multirun (None
    outside one) and ``parallel`` whether its launcher runs jobs at the same time. ``key`` is the
    setting errors name (``expt.load`` and ``python -m expt.evaluate`` name their own).
    """
    name = str(requested).strip()
    if name == "auto":
        if cuda_count == 0:
            return "cpu"
        if parallel and job_num is not None and cuda_count > 1:
            return f"cuda:{job_num % cuda_count}"
        return "cuda"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2]
        if name != "cuda" and not index_text.isdigit():
            raise ConfigError(f"{key}={name!r} is not allowed: use {allowed(cuda_count)}.")
        if cuda_count == 0:
            raise ConfigError(f"{key}={name!r} is not available: this machine has no CUDA device "
                              f"(use {key}=auto or cpu).")
        if index_text and int(index_text) >= cuda_count:
            raise ConfigError(f"{key}={name!r} is not available: this process sees {cuda_count} CUDA "
                              f"device(s); use {allowed(cuda_count)}.")
        return name
    raise ConfigError(f"{key}={name!r} is not allowed: use {allowed(cuda_count)}.")


def physical_gpu(index: int, env: Mapping[str, str]) -> str:
    """What ``cuda:<index>`` is on the machine (as nvidia-smi numbers it), given ``CUDA_VISIBLE_DEVICES``."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return str(index)
    ids = [part.strip() for part in visible.split(",") if part.strip()]
    return ids[index] if index < len(ids) else str(index)


def runs_side_by_side(launcher_target: str) -> bool:
    """Whether the launcher named by this ``hydra.launcher._target_`` runs a batch's jobs at the same time."""
    name = str(launcher_target).rpartition(".")[2]
    return bool(name) and name not in ONE_PROCESS


def hydra_job() -> Tuple[Optional[int], bool]:
    """(job number, whether jobs run side by side) of the current Hydra multirun job; (None, False) otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, False
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, False
    target = str(hydra_cfg.launcher.get("_target_", "")) if hydra_cfg.get("launcher") else ""
    job_num = hydra_cfg.job.get("num")
    return (int(job_num) if job_num is not None else None), runs_side_by_side(target)
