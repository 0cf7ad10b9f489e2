"""What a sweep tells each of its trials about itself: the environment variables, named once.

The coarse-to-fine sweeper sets them per trial through ``hydra.job.env_set``, so they reach the
trial's own process under any launcher; the trial's dashboard (run names, which diagnostics to
write) and its early stopping (:mod:`expt.pruning`) read them. Outside a sweep none is set.
"""

ROUND = "EXPT_SWEEP_ROUND"  # the trial's round (0: the pinpoint stage)
JOB = "EXPT_SWEEP_JOB"  # its Hydra job number
FINAL = "EXPT_SWEEP_FINAL"  # 1 for the trials of the sweep's last round, 0 for the others
LABEL = "EXPT_SWEEP_LABEL"  # its short name, e.g. "r2-j13 lr=3.1e-3 l2=1.2e-4"
PROGRESS = "EXPT_SWEEP_PROGRESS"  # the round's progress file, set only where trials may be pruned
PRUNE = "EXPT_SWEEP_PRUNE"  # the pruning rule, "<min_trials>:<warmup_epochs>"
