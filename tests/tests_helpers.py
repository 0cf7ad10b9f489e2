"""Small user-side classes that tests name with ``_target_``, as a user's own module would be."""

import os
import time

import torch


class Negate:
    """An augmentation of one's own: (batch, generator) -> batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -x


PAUSE_ENV = "EXPT_TEST_PAUSE_AT"


class PauseAt:
    """An augmentation that changes nothing, and holds the run still at one step for a test to signal it there.

    With ``EXPT_TEST_PAUSE_AT=<n>:<path>`` in the environment, the n-th batch this process augments (counted
    from 1) creates ``<path>`` and waits until a signal ends the wait (at most 10 minutes). Where ``<path>``
    exists already it does not wait, so a resumed or requeued run goes straight on; without the variable it
    is the identity, and a run with it gives the numbers of the same run without it.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        at, _, path = os.environ.get(PAUSE_ENV, "").partition(":")
        if at and self.calls == int(at) and not os.path.exists(path):
            open(path, "w").close()
            for _ in range(6000):  # a signal (SIGINT, SIGKILL, a requeue's SIGUSR2) ends this
                time.sleep(0.1)
        return x


JOB_EVENTS_ENV = "EXPT_TEST_JOB_EVENTS"


class JobEvents:
    """A Hydra callback of one's own (``hydra.callbacks.<name>._target_``): appends, as one JSON line each,
    what a job's ``on_job_start`` and ``on_job_end`` see (working directory, environment, Hydra's view of the
    job, the JobReturn's fields, the lines of the sweep's search.jsonl) to the file ``$EXPT_TEST_JOB_EVENTS`` names."""

    def _write(self, **event: object) -> None:
        import json

        with open(os.environ[JOB_EVENTS_ENV], "a") as f:
            f.write(json.dumps(event, sort_keys=True, default=str) + "\n")

    def on_job_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        view = HydraConfig.get()
        self._write(event="start", num=int(config.hydra.job.num), cwd=os.getcwd(),
                    mark=os.environ.get("EXPT_TEST_MARK"), output_dir=view.runtime.output_dir, job_num=view.job.num,
                    task=callable(kwargs.get("task_function")))

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from pathlib import Path

        from hydra.core.hydra_config import HydraConfig

        value = job_return.return_value
        records = Path(str(config.hydra.sweep.dir)) / "search.jsonl"  # a coarse-to-fine sweep's, as the job ends
        self._write(event="end", num=int(config.hydra.job.num), cwd=os.getcwd(), mark=os.environ.get("EXPT_TEST_MARK"),
                    status=job_return.status.name, value=type(value).__name__,
                    objective=float(getattr(value, "objective", value)),  # a RunResult, or a sweep's TrialRecord
                    metrics_status=getattr(value, "metrics", {}).get("status"), working_dir=job_return.working_dir,
                    task_name=job_return.task_name, overrides=list(job_return.overrides),
                    lr=job_return.cfg.optimizer.lr, has_hydra="hydra" in job_return.cfg,
                    hydra_num=job_return.hydra_cfg.hydra.job.num,
                    hydra_dir=job_return.hydra_cfg.hydra.runtime.output_dir,
                    output_dir=HydraConfig.get().runtime.output_dir,
                    records=len(records.read_text().splitlines()) if records.exists() else None)


class ScaledMLP(torch.nn.Module):
    """A model of one's own with a buffer its state_dict leaves out (``persistent=False``): a fixed output scale."""

    def __init__(self, input_shape, num_classes, **_ignored) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(int(torch.tensor(input_shape).prod()), 32)
        self.out = torch.nn.Linear(32, num_classes)
        self.register_buffer("scale", torch.full((1,), 0.5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1)))) * self.scale
