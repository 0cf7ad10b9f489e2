"""Population training (expt.population) and the ``hydra/launcher=population`` plugin.

Trials trained together must give each trial the numbers it gets alone: every epoch's validation
loss within a small float tolerance and the same accuracies, with batch norm, with dropout (its
masks are drawn from each member's own copy of torch's random stream, as a lone run draws them)
and with a member that diverges. The launcher is run as a user runs it, ``python -m expt -m``.
"""

from __future__ import annotations

import copy
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import lock_held_elsewhere, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import expt
from expt.population import can_join, group_key, member_bytes, train_population

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.device=cpu", "dashboard.histograms=false", "dashboard.graph=false", "dashboard.filters=false"]
CONVNET = ["model=convnet", "model.num_filters=8", "model.hidden_dim=32", "data.subset=256", "trainer.epochs=2",
           "trainer.train_eval_samples=256", *FAST]
# four members that differ in learning rate and seed (init, batch order and dropout masks)
MEMBERS = [["optimizer.lr=1e-3", "trainer.seed=0"], ["optimizer.lr=3e-3", "trainer.seed=1"],
           ["optimizer.lr=1e-2", "trainer.seed=2"], ["optimizer.lr=5e-4", "trainer.seed=3"]]


def together_and_alone(tmp_path: Path, common: list[str], members: list[list[str]]):
    cfgs = [expt.compose([*common, *m]) for m in members]
    together = train_population(cfgs, [tmp_path / f"together{i}" for i in range(len(cfgs))])
    alone = [expt.train(cfg, run_dir=tmp_path / f"alone{i}") for i, cfg in enumerate(cfgs)]
    return together, alone


def assert_same_run(together: dict, alone: dict, loss_tol: float) -> None:
    assert together["status"] == alone["status"]
    assert len(together["history"]) == len(alone["history"])
    for t, a in zip(together["history"], alone["history"]):
        assert t["epoch"] == a["epoch"] and t["lr"] == a["lr"]
        assert t["val_acc"] == a["val_acc"] and t["train_acc"] == a["train_acc"]
        assert math.isclose(t["val_loss"], a["val_loss"], rel_tol=loss_tol, abs_tol=loss_tol)
        assert math.isclose(t["train_loss"], a["train_loss"], rel_tol=loss_tol, abs_tol=loss_tol)
    for key in ("best_val_acc", "best_epoch", "test_acc", "objective", "epochs_completed"):
        assert together[key] == alone[key], key


def train_losses(run_dir: Path) -> list[float]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("loss/train")]


CASES = {  # overrides, tolerance on the losses
    "dropout_batchnorm_adam": (["regularization=[l2,dropout,batchnorm]", "regularization.dropout=0.3"], 1e-5),
    "dropout_momentum": (["regularization=[l2,dropout]", "optimizer=momentum", "optimizer.lr=0.01"], 1e-5),
    "float64_adamw_elastic_net_max_norm_cosine": (
        ["regularization=[elastic_net,dropout,batchnorm,max_norm]", "optimizer=adamw", "trainer.dtype=float64",
         "schedule=cosine", "schedule.T_max=2"], 1e-12),
}


@pytest.mark.parametrize("case", [
    "dropout_batchnorm_adam",
    pytest.param("dropout_momentum", marks=pytest.mark.slow),
    pytest.param("float64_adamw_elastic_net_max_norm_cosine", marks=pytest.mark.slow),
])
def test_four_trials_together_match_the_same_trials_alone(tmp_path: Path, case: str) -> None:
    extra, tol = CASES[case]
    together, alone = together_and_alone(tmp_path, [*CONVNET, *extra], MEMBERS)
    for i, (t, a) in enumerate(zip(together, alone)):
        assert_same_run(t, a, tol)
        run = tmp_path / f"together{i}"
        assert json.loads((run / "metrics.json").read_text())["best_val_acc"] == t["best_val_acc"]
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
        mine, lone = train_losses(run), train_losses(tmp_path / f"alone{i}")
        assert len(mine) == len(lone) and all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(mine, lone))
    # the members really differ: another seed and rate give another run
    assert len({t["history"][-1]["val_loss"] for t in together}) == len(together)
    # a member's best model loads as a lone run's does
    assert expt.load(tmp_path / "together1").epoch == together[1]["best_epoch"]


def test_a_diverging_member_stops_alone(tmp_path: Path, caplog) -> None:
    common = ["model=mlp", "model.hidden_sizes=[32]", "data.subset=256", "trainer.epochs=2", "optimizer=sgd",
              "regularization=none", "trainer.log_every=2", *FAST]
    with caplog.at_level("WARNING", logger="expt.trainer.loop"):
        together, alone = together_and_alone(tmp_path, common, [
            ["optimizer.lr=0.05"], ["optimizer.lr=30", "trainer.divergence_factor=2.5"], ["optimizer.lr=0.1"]])
    assert [t["status"] for t in together] == ["completed", "diverged", "completed"]
    said = [r.getMessage() for r in caplog.records if "is NaN, Inf or above" in r.getMessage()]
    assert len(said) == 2 and all("above 2.5x the initial loss" in m for m in said), said  # its own factor, not 3
    for message in said:  # the loss it names is the step's that stopped it (it named the epoch's mean so far)
        loss, initial = (float(v) for v in re.search(r"training loss (\S+) is .* initial loss (\S+):", message).groups())
        assert not math.isfinite(loss) or loss > 2.5 * initial, message
        assert re.search(r"Epoch \d+, step \d+: ", message), message
    for t, a in zip(together, alone):
        assert_same_run(t, a, 1e-5)


def test_a_member_that_fails_a_strict_sanity_check_stops_alone_and_the_others_train(tmp_path: Path) -> None:
    """The guard judges each member's loss at init, measured with the others' (it had measured its own, one
    member at a time, and a strict failure kept the whole population from starting): the member whose classifier
    starts 100 times too large stops before its first step with the error its lone run gives, and writes no
    metrics or checkpoint; the others train as they do alone."""
    from expt.checks import SanityError

    cfgs = [expt.compose([*CONVNET, "sanity.before_train=strict", *m]) for m in (
        ["optimizer.lr=1e-3", "trainer.seed=0"], ["optimizer.lr=3e-3", "trainer.seed=1", "init.classifier_scale=100"],
        ["optimizer.lr=1e-2", "trainer.seed=2"])]
    together = train_population(cfgs, [tmp_path / f"together{i}" for i in range(3)])
    assert isinstance(together[1], SanityError), together[1]
    with pytest.raises(SanityError) as alone:
        expt.train(cfgs[1], run_dir=tmp_path / "alone1")
    assert str(together[1]) == str(alone.value) and "The run stops (sanity.before_train=strict" in str(alone.value)
    assert not (tmp_path / "together1" / "metrics.json").exists()
    assert not (tmp_path / "together1" / "checkpoints").exists()
    for i in (0, 2):
        assert_same_run(together[i], expt.train(cfgs[i], run_dir=tmp_path / f"alone{i}"), 1e-5)


def test_one_cycle_and_ema_together_match_alone(tmp_path: Path) -> None:
    """A per-step schedule (each member's rate handed to the engine every step) and the averaged weights."""
    common = [*CONVNET, "regularization=[l2,batchnorm]", "schedule=onecycle", "trainer.ema=0.9", "trainer.log_every=3"]
    together, alone = together_and_alone(tmp_path, common, MEMBERS[:3])
    for t, a in zip(together, alone):
        assert_same_run(t, a, 1e-5)
        for rt, ra in zip(t["history"], a["history"]):
            assert rt["ema_val_acc"] == ra["ema_val_acc"]
            assert math.isclose(rt["ema_val_loss"], ra["ema_val_loss"], rel_tol=1e-5, abs_tol=1e-5)
        assert t["best_averaged"] == a["best_averaged"]
    # one-cycle: the rate rises from lr / 10 within the run, so the epochs log different rates
    lr0 = 1e-3
    assert together[0]["history"][0]["lr"] == pytest.approx(lr0 / 10) and together[0]["history"][1]["lr"] > lr0 / 10


def test_the_median_rule_prunes_a_member_as_it_prunes_a_lone_trial(tmp_path: Path) -> None:
    """Early stopping is the loop's: a member behind three other trials at epoch 1 stops there, as pruned,
    with the metrics and checkpoints of a lone trial stopped by the same rule."""
    from expt.dashboard import Dashboard
    from expt.jsonl import append_line
    from expt.build import build
    from expt.pruning import MedianRule, PROGRESS_FILE
    from expt.sweep_env import SweepTrial
    from expt.trainer import Trainer

    common = [*CONVNET, "trainer.epochs=3"]
    members = [["optimizer.lr=1e-3", "trainer.seed=0"], ["optimizer.lr=1e-9", "trainer.seed=1"]]

    def sweeps(name: str) -> list[SweepTrial]:
        path = tmp_path / name / PROGRESS_FILE
        for job in (10, 11, 12):  # three other trials of the round, far ahead at epoch 1
            append_line(path, {"round": 0, "job": job, "epoch": 1, "score": 0.99})
        return [SweepTrial(round=0, job=job, progress=path, rule=MedianRule(min_trials=3, warmup_epochs=1))
                for job in (0, 1)]

    cfgs = [expt.compose([*common, *m]) for m in members]
    together = train_population(cfgs, [tmp_path / "together" / str(i) for i in range(2)],
                                sweeps=sweeps("together"))
    assert [t["status"] for t in together] == ["pruned", "pruned"]
    assert [t["epochs_completed"] for t in together] == [1, 1]
    alone = []
    for i, (cfg, sweep) in enumerate(zip(cfgs, sweeps("alone"))):
        run_dir = tmp_path / "alone" / str(i)
        dashboard = Dashboard(run_dir, cfg)
        alone.append(Trainer.single(build(cfg), run_dir, dashboard, report=sweep.progress_report()).fit()[0])
        dashboard.close()
    for i, (t, a) in enumerate(zip(together, alone)):
        assert_same_run(t, a, 1e-5)
        assert json.loads((tmp_path / "together" / str(i) / "metrics.json").read_text())["status"] == "pruned"
        assert (tmp_path / "together" / str(i) / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_a_members_last_checkpoint_resumes_as_a_lone_runs_does(tmp_path: Path) -> None:
    """last.pt holds the member's optimizer state and random streams: resumed alone for one more epoch,
    the member ends where a lone run of 3 epochs ends."""
    common = [*CONVNET, "regularization=[l2,dropout,batchnorm]", "optimizer=momentum"]
    train_population([expt.compose([*common, *m]) for m in MEMBERS[:2]], [tmp_path / "m0", tmp_path / "m1"])
    again = expt.compose([*common, *MEMBERS[1], "trainer.epochs=3", f"trainer.resume={tmp_path / 'm1'}"])
    resumed = expt.train(again, run_dir=tmp_path / "m1")
    lone = expt.train(expt.compose([*common, *MEMBERS[1], "trainer.epochs=3"]), run_dir=tmp_path / "lone")
    assert_same_run(resumed, lone, 1e-5)


# what the Fashion-MNIST ResNet preset trains with, on a model and slice small enough for a test: residual blocks
# with batch norm, 2-pixel shifts and flips, Nesterov SGD on a one-cycle rate stepped every batch, label smoothing
# and an average of the weights
RESNET_PRESET = ["model=resnet", "model.depth=8", "model.width=4", "augmentation=[translate,hflip]",
                 "augmentation.translate.pad=2", "augmentation.translate.mode=zeros", "optimizer=nesterov",
                 "optimizer.lr=0.05", "schedule=onecycle", "regularization.l2=2.5e-4", "trainer.label_smoothing=0.1",
                 "trainer.ema=0.9", "trainer.batch_size=128", "data.subset=256", "trainer.epochs=2",
                 "trainer.train_eval_samples=256", *FAST]


@pytest.mark.parametrize("mapping", ["the CPU's loop over members", "vmap, as on CUDA"])
def test_the_resnet_presets_seeds_trained_together_match_them_alone(tmp_path: Path, monkeypatch, mapping: str) -> None:
    """The ResNet preset's seeds as one population (bench/presets.py --population, gpu.sh --resnet) give each seed's
    lone run. On CUDA the members' step is vmapped; forcing vmap here tries that path's arithmetic on the CPU."""
    vmapped = []
    if mapping.startswith("vmap"):
        from torch.func import vmap

        import expt.trainer.vmap as engine

        def mapped(fn, in_dims, device):
            vmapped.append(fn)
            return vmap(fn, in_dims=in_dims, randomness="error")

        monkeypatch.setattr(engine, "over_members", mapped)
    seeds = [["trainer.seed=0"], ["trainer.seed=1"], ["trainer.seed=2"]]
    together, alone = together_and_alone(tmp_path, RESNET_PRESET, seeds)
    assert bool(vmapped) == mapping.startswith("vmap")  # the steps and the evaluations went through vmap
    for t, a in zip(together, alone):
        assert_same_run(t, a, 1e-5)
        assert "ema_val_acc" in t["history"][-1]  # the average is kept per member
    assert len({t["history"][-1]["val_loss"] for t in together}) == 3  # three seeds, three runs


def test_the_cpu_loop_over_members_gives_what_vmap_gives() -> None:
    """On the CPU the members run one after another on views of the stacked tensors (faster there than a
    vmapped convolution): the same outputs, gradients and batch-norm running statistics as ``vmap``."""
    from torch import nn
    from torch.func import functional_call, stack_module_state, vmap

    from expt.trainer.vmap import over_members

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
              for _ in range(3)]
    base = copy.deepcopy(models[0]).to("meta")
    x, scale = torch.randn(3, 5, 1, 6, 6), torch.tensor([1.0, 2.0, 3.0])

    def loss(params, buffers, xs, s):
        return s * functional_call(base, (params, buffers), (xs,)).square().mean()

    results = []
    for mapped in (vmap(loss, in_dims=(0, 0, 0, 0)), over_members(loss, (0, 0, 0, 0), torch.device("cpu"))):
        params, buffers = stack_module_state(models)
        losses = mapped(params, buffers, x, scale)
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        results.append((losses.detach(), grads, {k: v.clone() for k, v in buffers.items()}))
    (l_v, g_v, b_v), (l_c, g_c, b_c) = results
    assert l_c.shape == (3,) and torch.allclose(l_c, l_v, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_c, g_v))
    assert all(torch.allclose(b_c[k], b_v[k], rtol=1e-5, atol=1e-6) for k in b_v)
    assert float(b_c["1.num_batches_tracked"][0]) == 1 and not torch.equal(b_c["1.running_mean"][0], torch.zeros(4))
    # a shared argument (in_dims None) reaches every member whole
    shared = over_members(lambda p, b, xs: functional_call(base, (p, b), (xs,)), (0, 0, None), torch.device("cpu"))
    params, buffers = stack_module_state(models)
    assert shared(params, buffers, x[0]).shape == (3, 5, 3)


def test_the_optimizer_step_writes_only_into_gradients_of_its_own() -> None:
    """The members' step updates in place, in the gradients autograd returns: those autograd hands back expanded
    (a sum's) or shared by two parameters (an addition's) are copied first, the others are used as they are."""
    from expt.trainer.vmap import _writable

    w, a, b = (torch.randn(3, 4, requires_grad=True) for _ in range(3))
    expanded, = torch.autograd.grad(w.sum(), [w])
    first, second = torch.autograd.grad(((a + b) ** 2).sum(), [a, b])
    assert not expanded.is_contiguous() and first is second and first.is_contiguous()  # what autograd does
    fresh, = torch.autograd.grad((w * w).sum(), [w])
    owned = _writable([fresh, expanded, first, second])
    assert owned[0] is fresh and owned[2] is first
    assert owned[1].is_contiguous() and torch.equal(owned[1], expanded)
    assert owned[3] is not first and torch.equal(owned[3], first)
    pointers = {g.data_ptr() for g in owned}
    assert len(pointers) == 4
    for g in owned:
        g.mul_(2)  # each can be written alone
    assert torch.equal(owned[2], owned[3]) and torch.equal(owned[1], 2 * torch.ones(3, 4))
    assert torch.equal(owned[2], 4 * (a + b).detach())  # written once, not twice


def test_which_configs_can_train_together(compose, tmp_path) -> None:
    base = compose(*CONVNET)
    same = [compose(*CONVNET, "optimizer.lr=0.01", "regularization.l2=1e-3", "trainer.seed=4", "schedule.gamma=0.3"),
            compose(*CONVNET, "init.classifier_scale=0.2", "optimizer.betas=[0.8,0.99]")]
    assert all(group_key(c) == group_key(base) for c in same)
    other = [compose(*CONVNET, "model.hidden_dim=33"), compose(*CONVNET, "trainer.batch_size=32"),
             compose(*CONVNET, "regularization=[l2,dropout]")]
    assert all(group_key(c) not in (None, group_key(base)) for c in other)
    assert can_join(compose(*CONVNET, "trainer.ema=0.9")) is None  # the vmapped engine averages too
    assert can_join(compose(*CONVNET, "trainer.amp=bf16")) is None
    assert can_join(compose(*CONVNET, "trainer.amp=false")) is None  # YAML's false is off; it trained alone
    assert "trainer.amp=fp16" in can_join(compose(*CONVNET, "trainer.amp=fp16"))
    assert "trainer.compile=True" in can_join(compose(*CONVNET, "trainer.compile=true"))
    assert "optimizer._target_" in can_join(compose(*CONVNET, "optimizer=rmsprop"))
    assert group_key(compose(*CONVNET, "optimizer=rmsprop")) is None
    for config, said in zip(other, ("at model.hidden_dim: 33 against 32", "at trainer.batch_size: 32 against 64",
                                    "at regularization.batchnorm: False against True")):
        with pytest.raises(expt.ConfigError, match=f"member 1's config differs from member 0's {said}"):
            train_population([base, config], [tmp_path / "0", tmp_path / "1"])  # refused before anything is built
    from expt.population import first_difference

    assert first_difference({"a": {"b": 1}}, {"a": {"b": 1.0}}) == "a.b: 1 against 1.0"  # as group_key's repr
    assert first_difference({"a": None}, {}) == "a: None against absent"
    dropout = [compose(*CONVNET, "regularization=[l2,batchnorm,dropout]", f"regularization.dropout={p}") for p in (0.5, 0)]
    with pytest.raises(expt.ConfigError, match="differs from member 0's at regularization.dropout: 0 in one, above 0 in "):
        train_population(dropout, [tmp_path / "0", tmp_path / "1"])
    assert not tmp_path.joinpath("0").exists()
    # the planned memory of one member (what caps a population on a GPU): at least its weights, 4 times
    weights = 8 * 9 + 8 + 8 * 16 * 32 + 32 + 32 * 10 + 10
    assert 4 * 4 * weights < member_bytes(base) < 2 ** 24


def test_a_population_refuses_configs_that_differ_in_more_than_member_values(compose, tmp_path: Path) -> None:
    with pytest.raises(expt.ConfigError, match="differs from member 0's at model.hidden_dim: 16 against 32: members "
                                               "may differ only in optimizer.lr, "):
        train_population([compose(*CONVNET), compose(*CONVNET, "model.hidden_dim=16")],
                         [tmp_path / "a", tmp_path / "b"])


def test_a_population_takes_the_group_keys_its_launcher_computed(compose, tmp_path: Path, monkeypatch) -> None:
    """The launcher groups its jobs by group_key and hands the keys on, so a member's key is computed once; the
    population still checks them, and names where two members differ."""
    from expt import population

    configs = [compose(*CONVNET), compose(*CONVNET, "model.hidden_dim=16")]
    keys = [group_key(c) for c in configs]
    computed = []
    monkeypatch.setattr(population, "group_key", lambda cfg: computed.append(cfg) or group_key(cfg))
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(expt.ConfigError, match="member 1's config differs from member 0's at model.hidden_dim: 16 "):
        population.Population(configs, dirs, keys=keys)
    # keys that say the members match are taken as they are: the shapes differ, and the build finds it
    with pytest.raises(expt.ConfigError, match="member 1's model has other parameter shapes than member 0's"):
        population.Population(configs, dirs, keys=[keys[0], keys[0]])
    with pytest.raises(expt.ConfigError, match="member 1 cannot train in a population: trainer.amp=fp16"):
        population.Population([configs[0], compose(*CONVNET, "trainer.amp=fp16")], dirs, keys=[keys[0], None])
    with pytest.raises(ValueError, match="^2 configs but 1 group key$"):
        population.Population(configs, dirs, keys=keys[:1])
    assert computed == []  # not once: the keys given are the ones checked
    with pytest.raises(expt.ConfigError, match="member 1's config differs from member 0's at model.hidden_dim: 16 "):
        population.Population(configs, dirs)  # without keys, computed here
    assert len(computed) == 2


def test_a_member_shares_the_first_members_prepared_splits_and_preprocessor(compose) -> None:
    """A population's members are built on the first member's splits: the same tensors and statistics a member
    would prepare itself, not a copy of the dataset each, and the same model."""
    from expt.build import build

    first = build(compose(*CONVNET))
    cfg = compose(*CONVNET, "optimizer.lr=0.01", "trainer.seed=3", "regularization.l2=1e-3")
    shared, own = build(cfg, same_data_as=first), build(cfg)
    assert shared.data is first.data and shared.preprocessor is first.preprocessor
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(shared.data, split), getattr(own.data, split)), split
    for a, b in ((shared.preprocessor, own.preprocessor), (shared.model, own.model)):
        assert [k for k in a.state_dict()] == [k for k in b.state_dict()]
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="preprocessing"):
        build(compose(*CONVNET, "preprocessing=mean_image"), same_data_as=first)
    with pytest.raises(ValueError, match="data"):
        build(compose(*CONVNET, "data.subset=128"), same_data_as=first)
    with pytest.raises(ValueError, match="trainer.dtype"):
        build(compose(*CONVNET, "trainer.dtype=float64"), same_data_as=first)


def test_a_member_validated_by_the_launcher_is_not_validated_again(compose) -> None:
    """build(validated=True) takes the caller's word (the launcher validates each job to group it); without it,
    build refuses a bad value itself."""
    from expt.build import build

    bad = compose(*CONVNET, "optimizer.lr=0")
    with pytest.raises(expt.ConfigError, match="optimizer.lr=0"):
        build(bad)
    assert build(bad, validated=True).optimizer.param_groups[0]["lr"] == 0


# ============================================================================= the launcher
def multirun(tmp_path: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("--multirun", "hydra/launcher=population", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
                   cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, check=check)


def test_the_launcher_loads_a_dataset_once_for_its_groups_and_rounds(compose) -> None:
    from expt.data import load as load_data
    from hydra_plugins.expt_population._impl import PopulationLauncherImpl

    launcher = PopulationLauncherImpl(max_population=64, memory_fraction=0.8)
    first = launcher._data(compose(*CONVNET, "optimizer.lr=0.1"))
    assert launcher._data(compose(*CONVNET, "trainer.seed=3", "model.hidden_dim=16")) is first  # one data config
    assert torch.equal(first.x_train, load_data(compose(*CONVNET).data).x_train)
    other = launcher._data(compose(*CONVNET, "data.subset=128"))
    assert other is not first and len(other.x_train) == 128
    assert launcher._data(compose(*CONVNET)) is not first  # one dataset kept at a time: loaded again


def test_a_bad_max_population_names_the_key(tmp_path: Path) -> None:
    """The paragraph alone (it came inside Hydra's 'Error in call to target ...: ConfigError(...)')."""
    done = multirun(tmp_path, "hydra.launcher.max_population=0", *CONVNET, "optimizer.lr=1e-3,1e-2", check=False)
    assert done.returncode == 1 and "Error in call to target" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    assert lines == ["Error in the config: hydra.launcher.max_population=0 is not allowed: an integer >= 1 (the most "
                     "trials trained together; 1 runs every trial alone)"], done.stderr


def test_jobs_that_share_their_config_with_no_other_are_said_to_train_alone_and_why(tmp_path: Path) -> None:
    """A batch that differs in a model's width (a search over widths) formed no population without a word; and the
    launch lines showed every override added to Hydra's own settings (a sweeper's env_set for each trial)."""
    # job 0's interpolation names no key: it fails alone, with its paragraph, and is no one's partner
    done = multirun(tmp_path, *CONVNET, "trainer.epochs=1", "model.hidden_dim=${trainer.nope},16,32",
                    "+hydra.job.env_set.EXPT_NOTE=x", check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert ("jobs 1, 2 train alone: each has no other job of this batch to share a population with (job 1 differs "
            "from job 2 at model.hidden_dim: 16 against 32; members may differ only in optimizer.lr, ") in said
    assert ("Error in the config: an interpolation in the overrides or the config cannot be resolved: Interpolation "
            "key 'trainer.nope' not found.") in said
    launched = [line for line in said.splitlines() if "\t#" in line]
    assert len(launched) == 3 and all("model.hidden_dim=" in line and "env_set" not in line for line in launched)
    assert "population of" not in said
    assert all((tmp_path / "sweep" / str(job) / "metrics.json").is_file() for job in (1, 2))


@pytest.mark.slow
def test_the_launcher_trains_compatible_trials_together_and_writes_every_run_directory(tmp_path: Path) -> None:
    # 3 rates x 2 hidden widths: two sets of 3 that can train together, capped at 2 members: 2 + 1 each
    done = multirun(tmp_path, *CONVNET, "hydra.launcher.max_population=2", "optimizer.lr=1e-3,3e-3,1e-2",
                    "model.hidden_dim=16,32")
    out = tmp_path / "sweep"
    widths = {job: yaml.safe_load((out / str(job) / ".hydra" / "config.yaml").read_text())["model"]["hidden_dim"]
              for job in range(6)}
    pairs = re.findall(r"population of (\d+): jobs ([\d, ]+)", done.stdout + done.stderr)
    assert [size for size, _ in pairs] == ["2", "2"]
    grouped = []
    for _, jobs in pairs:
        a, b = (int(j) for j in jobs.split(", "))
        assert widths[a] == widths[b]
        grouped += [a, b]
    alone = sorted(set(range(6)) - set(grouped))[:1]
    for job in range(6):
        run = out / str(job)
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.json",
                     "checkpoints/best.pt", "checkpoints/last.pt", "expt.log"):
            assert (run / name).is_file(), (job, name)
        assert list(run.glob("events.out.tfevents.*"))
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "completed" and len(metrics["history"]) == 2
        if job in grouped[:1] + alone:  # a member's numbers, and the lone job's, are those of the config alone
            lone = expt.train(expt.compose([*CONVNET, f"optimizer.lr={cfg['optimizer']['lr']}",
                                            f"model.hidden_dim={cfg['model']['hidden_dim']}"]),
                              run_dir=tmp_path / f"lone{job}")
            assert_same_run(metrics, lone, 1e-5)


@pytest.mark.slow
def test_a_members_job_is_kept_as_hydras_basic_launcher_keeps_a_job(tmp_path: Path) -> None:
    """The launcher does a trained member's job bookkeeping itself (not through Hydra's run_job): the same
    .hydra/ files, job log, working directory (hydra.job.chdir=true), env_set, callbacks and JobReturn fields
    as the basic launcher gives the same jobs."""
    from tests_helpers import JOB_EVENTS_ENV

    common = ["--multirun", f"hydra.sweep.dir={tmp_path / '{launcher}'}", *CONVNET, "trainer.epochs=1",
              "optimizer.lr=1e-3,1e-2", "hydra.job.chdir=true", "+hydra.job.env_set.EXPT_TEST_MARK=job${hydra:job.num}",
              "+hydra.callbacks.events._target_=tests_helpers.JobEvents"]
    runs = {}
    for launcher in ("basic", "population"):
        events = tmp_path / f"{launcher}.jsonl"
        done = run_cli(*(a.replace("{launcher}", launcher) for a in common), f"hydra/launcher={launcher}",
                       cwd=tmp_path, env={"OMP_NUM_THREADS": "1", JOB_EVENTS_ENV: str(events)}, check=True)
        together = "population of 2: jobs 0, 1" in done.stdout + done.stderr
        assert together == (launcher == "population")
        sweep = tmp_path / launcher
        lines = [json.loads(line.replace(str(sweep), "<sweep>")) for line in events.read_text().splitlines()]
        runs[launcher] = (sweep, lines)
    (basic, basic_events), (population, population_events) = runs["basic"], runs["population"]
    for event in basic_events + population_events:
        assert event["status" if event["event"] == "end" else "task"] in ("COMPLETED", True)
        if event["event"] == "end":
            assert event["value"] == "RunResult" and event["metrics_status"] == "completed"
            assert 0 <= event.pop("objective") <= 1  # members' numbers equal lone runs' within float tolerance
    assert population_events == basic_events
    assert [(e["event"], e["num"], e["mark"], e["cwd"]) for e in basic_events] == [
        ("start", 0, "job0", "<sweep>/0"), ("end", 0, None, "<sweep>/0"),  # env_set holds until the job's end
        ("start", 1, "job1", "<sweep>/1"), ("end", 1, None, "<sweep>/1")]

    def hydra_yaml(sweep: Path, job: int) -> dict:
        """hydra.yaml less what names the launcher or the sweep's directory."""
        cfg = yaml.safe_load((sweep / str(job) / ".hydra" / "hydra.yaml").read_text().replace(str(sweep), "<sweep>"))
        for key in ("launcher", "sweep"):
            cfg["hydra"].pop(key)
        cfg["hydra"]["runtime"]["choices"].pop("hydra/launcher")
        cfg["hydra"]["overrides"]["hydra"] = [o for o in cfg["hydra"]["overrides"]["hydra"]
                                              if not o.startswith(("hydra/launcher=", "hydra.sweep.dir="))]
        return cfg

    for job in (0, 1):
        for name in ("config.yaml", "overrides.yaml"):
            assert (population / str(job) / ".hydra" / name).read_text() == \
                (basic / str(job) / ".hydra" / name).read_text(), (job, name)
        assert hydra_yaml(population, job) == hydra_yaml(basic, job)
        assert "epoch 1/1" in (population / str(job) / "expt.log").read_text()
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # every run wrote in its own directory


@pytest.mark.slow
def test_a_members_logging_is_its_jobs_as_under_the_basic_launcher(tmp_path: Path) -> None:
    """``hydra.job_logging`` holds for a member as for a lone job: its console format, its own lines in its own
    log file; no file and no lines below errors with ``hydra/job_logging=disabled``."""
    said, logs = {}, {}
    for launcher in ("basic", "population"):
        for setting in ("default", "disabled"):
            sweep = tmp_path / f"{launcher}-{setting}"
            done = run_cli("--multirun", f"hydra/launcher={launcher}", f"hydra/job_logging={setting}",
                           f"hydra.sweep.dir={sweep}", *CONVNET, "trainer.epochs=1", "optimizer.lr=1e-3,1e-2",
                           cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, check=True)
            said[launcher, setting] = done.stdout
            logs[launcher, setting] = [sweep / str(job) / "expt.log" for job in (0, 1)]
    for launcher in ("basic", "population"):
        assert not any(path.exists() for path in logs[launcher, "disabled"]), launcher
        assert "Sanity check" not in said[launcher, "disabled"] and "Sanity check" in said[launcher, "default"]
        member = "job 0: " if launcher == "population" else ""  # a member's lines name its job; a lone job's need not
        assert f"][expt.sanity][INFO] - {member}Sanity check: initial loss" in said[launcher, "default"], launcher
        for path in logs[launcher, "default"]:
            text = path.read_text()
            assert text.count("Sanity check: initial loss") == 1, (launcher, text)  # its own, not the other's
            assert len(re.findall(r"ConvNet \(.*\) on cpu: 256 train", text)) == 1, (launcher, text)
            assert re.search(r"completed: best val .* Run directory: " + re.escape(str(path.parent)) + "$", text,
                             re.M), (launcher, text)
    # one log file for every job (its name holds no job's value): it is kept as the jobs' one file, with each
    # member's lines once (the population's own lines, such as its CUDA-graph note, would be written once too)
    shared = tmp_path / "all.log"
    run_cli("--multirun", "hydra/launcher=population", f"hydra.sweep.dir={tmp_path / 'shared'}",
            f"hydra.job_logging.handlers.file.filename={shared}", *CONVNET, "trainer.epochs=1", "optimizer.lr=1e-3,1e-2",
            cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, check=True)
    text = shared.read_text()
    assert text.count("Sanity check: initial loss") == 2 and text.count("job 0: completed") == 1, text
    assert text.count("job 1: completed") == 1 and text.count("Testing the best model") == 2, text
    # every line about one member names its job: its summary, its loss at init and its check, its diagnosis
    for line in ("ConvNet (", "Sanity check: initial loss", "Initial training loss", "Diagnosis: "):
        assert [text.count(f"job {job}: {line}") for job in (0, 1)] == [1, 1], (line, text)


@pytest.mark.slow
def test_a_members_config_yaml_under_a_preset_is_the_text_the_basic_launcher_saves(tmp_path: Path) -> None:
    """A preset whose group an override chooses again (``experiment=digits model=mlp``): the run trains the
    re-chosen group without the preset's keys, and .hydra/config.yaml says so, a member's as a lone job's."""
    common = ["--multirun", "experiment=digits", "model=mlp", "model.hidden_sizes=[16]", "data.subset=128",
              "trainer.epochs=1", "optimizer.lr=1e-3,1e-2"]
    texts = {}
    for launcher in ("basic", "population"):
        done = run_cli(*common, f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / launcher}",
                       cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, check=True)
        assert ("population of 2: jobs 0, 1" in done.stdout + done.stderr) == (launcher == "population")
        texts[launcher] = [(tmp_path / launcher / str(job) / ".hydra" / "config.yaml").read_text() for job in (0, 1)]
    assert texts["population"] == texts["basic"]
    model = yaml.safe_load(texts["population"][0])["model"]  # not the preset's keys of the option it chose
    assert model == {"_target_": "expt.models.MLP", "hidden_sizes": [16]}


@pytest.mark.slow
def test_a_coarse_to_fine_sweep_through_the_population_launcher_records_every_trial_as_its_job_ends(
        tmp_path: Path) -> None:
    from tests_helpers import JOB_EVENTS_ENV

    # the preset's other parameters (rate, schedule, L2, dropout) vary per member; a width would not
    events = tmp_path / "events.jsonl"
    done = run_cli("--multirun", "hydra/launcher=population", "hydra.launcher.max_population=2",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/sweeper=coarse_to_fine",
                   "hydra.sweeper.pinpoint.enabled=false", "hydra.sweeper.params={model.hidden_dim:null}",
                   "hydra.sweeper.rounds=[{trials:4,top_k:2,overrides:['trainer.epochs=1']}]", *CONVNET,
                   "+hydra.callbacks.events._target_=tests_helpers.JobEvents", cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "1", JOB_EVENTS_ENV: str(events)}, check=True)
    said = done.stdout + done.stderr
    assert re.findall(r"population of (\d+): jobs ([\d, ]+)", said) == [("2", "0, 1"), ("2", "2, 3")]
    assert re.search(r"job 3: completed: .* Run directory: .*sweep/3$", said, re.M), said[-3000:]  # its job, by name
    out = tmp_path / "sweep"
    records = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [r["job"] for r in records] == [0, 1, 2, 3]
    # each member's record is in search.jsonl as its job ends, as a lone trial's is: a sweep stopped during the
    # second population keeps the first's trials, and a rerun skips them
    ends = [e for e in map(json.loads, events.read_text().splitlines()) if e["event"] == "end"]
    assert [(e["num"], e["records"], e["value"]) for e in ends] == [(0, 1, "TrialRecord"), (1, 2, "TrialRecord"),
                                                                    (2, 3, "TrialRecord"), (3, 4, "TrialRecord")]
    for r in records:
        metrics = json.loads((out / r["run_dir"] / "metrics.json").read_text())
        assert r["status"] == metrics["status"] and r["objective"] == metrics["objective"]
        # the whole record comes from the member's run, as a lone run's comes from its task's return value
        assert (r["tie_value"], r["val_samples"], r["test_acc"], r["epochs"], r["seconds"]) == (
            metrics["best_val_loss"], metrics["val_samples"], metrics["test_acc"], metrics["epochs_completed"],
            round(metrics["seconds"], 3))


@pytest.mark.slow
def test_ctrl_c_keeps_each_members_run_and_a_requeued_sweep_resumes_every_member(tmp_path: Path) -> None:
    """SIGINT while a population trains epoch 2: every member's directory keeps what a lone run keeps
    (.hydra/, metrics.json "interrupted", best.pt, last.pt after epoch 1, the line that says how to resume).
    The same sweep started again with EXPT_RESUME_OWN_CHECKPOINT=1 (as a requeued cluster job is) resumes
    every member from its own last.pt, alone, to the end the member would have reached."""
    from conftest import PAUSE, finish, pause_env, read_metrics, start_held

    overrides = [*CONVNET, "trainer.epochs=3", "trainer.checkpoint_interval=0", PAUSE]
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    args = ["--multirun", "hydra/launcher=population", f"hydra.sweep.dir={sweep}", *overrides,
            "optimizer.lr=1e-3,1e-2"]
    proc = start_held(*args, cwd=tmp_path, held=overrides, epoch=2, marker=marker, env={"OMP_NUM_THREADS": "1"},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # after epoch 1's checkpoints
    proc.send_signal(signal.SIGINT)
    output = finish(proc, timeout=120)
    assert proc.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert "population of 2: jobs 0, 1" in output
    interrupted = {}
    for job, lr in ((0, "0.001"), (1, "0.01")):
        run = sweep / str(job)
        assert f"optimizer.lr={lr}" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        interrupted[job] = metrics = read_metrics(run)
        assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1, metrics
        assert (run / "checkpoints" / "best.pt").is_file()
        assert (f"job {job}: Interrupted during epoch 2; checkpoints/last.pt holds epoch 1: resume with "
                f"trainer.resume={run}") in output
    # the sweep's own way on, as the basic launcher says it
    assert (f"To continue the sweep: run the same command again with hydra.sweep.dir={sweep} and "
            "EXPT_RESUME_OWN_CHECKPOINT=1 in the environment") in output

    again = run_cli(*args, "+hydra.job.env_set.EXPT_RESUME_OWN_CHECKPOINT=1", cwd=tmp_path,
                    env={"OMP_NUM_THREADS": "1", **pause_env(overrides, 2, marker)}, check=True)
    said = again.stdout + again.stderr
    assert "population of" not in said
    for job, lr in ((0, "1e-3"), (1, "1e-2")):
        assert f"job {job} trains alone: it resumes from the checkpoint an earlier attempt left in {sweep / str(job)}" \
            in said
        resumed = read_metrics(sweep / str(job))
        assert resumed["status"] == "completed" and resumed["epochs_completed"] == 3
        assert resumed["history"][0] == interrupted[job]["history"][0]
        straight = expt.train(expt.compose([*CONVNET, "trainer.epochs=3", f"optimizer.lr={lr}"]),
                              run_dir=tmp_path / f"straight{job}")
        assert_same_run(resumed, straight, 1e-5)


@pytest.mark.slow
def test_a_member_whose_own_work_fails_stops_alone_as_under_the_basic_launcher(tmp_path: Path) -> None:
    """Job 1's run directory holds a file named checkpoints, so its checkpoints cannot be written: under either
    launcher job 1 fails with that error, named as job 1's, keeping its metrics.json as interrupted, and jobs 0
    and 2 complete with the same numbers."""
    runs = {}
    for launcher in ("basic", "population"):
        sweep = tmp_path / launcher
        (sweep / "1").mkdir(parents=True)
        (sweep / "1" / "checkpoints").write_text("not a directory")
        done = run_cli("--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", *CONVNET,
                       "optimizer.lr=1e-3,3e-3,1e-2", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
        said = done.stdout + done.stderr
        assert ("population of 3: jobs 0, 1, 2" in said) == (launcher == "population")
        assert done.returncode == 1 and "could not be written" in said, said[-3000:]
        assert "optimizer.lr=0.003" in said.split("could not be written")[0].rsplit("Error executing job", 1)[-1]
        assert "could not be written (File exists), so the run stopped at epoch 2; no checkpoint was kept." in said
        assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "interrupted"
        runs[launcher] = [json.loads((sweep / str(job) / "metrics.json").read_text()) for job in (0, 2)]
    for together, alone in zip(runs["population"], runs["basic"]):
        assert together["status"] == "completed"
        assert_same_run(together, alone, 1e-5)


@pytest.mark.slow
def test_a_member_that_fails_a_strict_check_is_reported_as_under_the_basic_launcher(tmp_path: Path) -> None:
    """Job 1's classifier starts 100 times too large, with sanity.before_train=strict: under either launcher it fails
    with the check's paragraph alone (no traceback), recorded as a config error, and job 0 completes. Its log line
    reads as a lone job's: the paragraph, then what goes on (a member's line names its job)."""
    for launcher in ("basic", "population"):
        sweep = tmp_path / launcher
        done = run_cli("--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", *CONVNET,
                       "sanity.before_train=strict", "init.classifier_scale=0.05,100", cwd=tmp_path,
                       env={"OMP_NUM_THREADS": "1"})
        said = done.stdout + done.stderr
        assert ("population of 2: jobs 0, 1" in said) == (launcher == "population"), said[-3000:]
        assert done.returncode == 1 and "Traceback" not in said, (launcher, said[-3000:])
        assert "Error in the config: Sanity check failed before training: initial loss" in said, (launcher, said[-3000:])
        stops = ("job 1: Error in the config: Sanity check failed before training: initial loss" if launcher == "population"
                 else "Error in the config: Sanity check failed before training: initial loss")
        goes_on = ("trains anyway). This run stops; the other runs go on." if launcher == "population"
                   else "trains anyway). This job trains nothing; the other jobs go on.")
        line = next((line for line in said.splitlines() if stops in line and "[ERROR]" in line), "")
        assert line.endswith(goes_on) and "?." not in line, (launcher, said[-3000:])
        assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
        assert not (sweep / "1" / "metrics.json").exists()


def test_a_member_whose_directory_another_process_trains_in_fails_alone_and_writes_nothing_there(
        tmp_path: Path) -> None:
    """The same sweep started twice into one sweep directory: job 1's directory is held by another process. Job 1
    fails naming that process, before the population writes anything there (its .hydra/ included); jobs 0 and 2
    train together and complete."""
    job1 = tmp_path / "sweep" / "1"
    job1.mkdir(parents=True)
    with lock_held_elsewhere(job1) as pid:
        done = multirun(tmp_path, *CONVNET, "optimizer.lr=1e-3,3e-3,1e-2", check=False)
        # the lock file, and the job's log (appended to, as Hydra does for any job): no .hydra/, events or checkpoints
        assert sorted(p.name for p in job1.iterdir()) == [".expt.lock", "expt.log"]
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in said, said[-3000:]
    assert (f"job 1: Error: another process (pid {pid}) is training in {job1}: wait for it to end or stop it, or train "
            "elsewhere (hydra.sweep.dir=...). This job stops; the other jobs go on.") in said
    assert "population of 2: jobs 0, 2" in said
    for job in (0, 2):
        assert json.loads((tmp_path / "sweep" / str(job) / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_members_hydra_interpolations_are_its_own_jobs(tmp_path: Path) -> None:
    """``trainer.seed=${hydra:job.num}``: each member is built (its init) and trained with its own job's value,
    as under the basic launcher."""
    runs = {}
    for launcher in ("basic", "population"):
        done = run_cli("--multirun", f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / launcher}",
                       *CONVNET, "trainer.epochs=1", "trainer.seed=${hydra:job.num}", "optimizer.lr=1e-3,1e-3,1e-3",
                       cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, check=True)
        assert ("population of 3: jobs 0, 1, 2" in done.stdout + done.stderr) == (launcher == "population")
        runs[launcher] = [json.loads((tmp_path / launcher / str(job) / "metrics.json").read_text()) for job in range(3)]
    assert len({m["initial_loss"] for m in runs["basic"]}) == 3  # three seeds, three initial models
    for together, alone in zip(runs["population"], runs["basic"]):
        assert math.isclose(together["initial_loss"], alone["initial_loss"], rel_tol=1e-6)
        assert_same_run(together, alone, 1e-5)


@pytest.mark.slow
def test_the_benchmark_writes_a_row_per_population_size(tmp_path: Path) -> None:
    results = tmp_path / "R.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "population.py"), "--quick", "--cases",
                           "convnet / digits 1x8x8", f"--results={results}"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    section = results.read_text().split("<!-- population-cpu -->", 1)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| convnet")]
    assert [r[1] for r in rows] == ["1", "2"]
    for _, _, basic, population, speedup, split, memory, added in rows:
        assert float(basic) > 0 and float(population) > 0 and float(memory) > 0 and speedup.endswith("x")
    assert rows[0][-1] == "-" and math.isfinite(float(rows[1][-1]))
    assert rows[0][5] == "-"  # a group of one trains alone: no population to build
    building, rest = (float(v) for v in rows[1][5].split(" / "))  # ms a member, measured, never judged
    assert building > 0 and rest > 0
    assert "so-far" not in results.read_text()  # written after each size beside it; the last write has every row


def test_the_fused_step_is_captured_where_each_member_would_be_and_no_dropout_mask_is_drawn(tmp_path: Path) -> None:
    """The decision (a CPU member is never captured; its CUDA twin is, unless dropout masks are drawn per member)."""
    from expt.build import build
    from expt.trainer.record import RunRecord
    from expt.trainer.vmap import VmapEngine, capture_rng

    def engine(extra: list[str], capturable: bool) -> VmapEngine:
        records = []
        for i, member in enumerate(MEMBERS[:2]):
            exp = build(expt.compose([*CONVNET, *extra, *member]))
            exp.capture = capturable  # as build decides it for the same config on CUDA
            records.append(RunRecord(exp, tmp_path / f"{len(extra)}{capturable}{i}", dashboard=None))
        return VmapEngine(records, [capture_rng(torch.device("cpu")) for _ in records])

    assert engine(["regularization=[l2,batchnorm]"], capturable=False).captured is None
    assert engine(["regularization=[l2,batchnorm]"], capturable=True).captured is not None
    assert engine(["regularization=[l2,dropout]"], capturable=True).captured is None
    assert "dropout masks" in engine(["regularization=[l2,dropout]"], capturable=True)._capture_blocker()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_captured_population_trains_as_an_uncaptured_one(tmp_path: Path) -> None:
    common = [*CONVNET, "trainer.device=cuda", "data.subset=300", "trainer.epochs=3", "regularization=[l2,batchnorm]",
              "schedule=onecycle", "trainer.ema=0.9"]  # 300 samples: a smaller last batch, captured too
    runs = {}
    for mode in ("auto", "false"):
        cfgs = [expt.compose([*common, *m, f"trainer.cuda_graph={mode}"]) for m in MEMBERS[:3]]
        runs[mode] = train_population(cfgs, [tmp_path / f"{mode}{i}" for i in range(len(cfgs))])
    for captured, eager in zip(runs["auto"], runs["false"]):
        assert captured["compile_warmup_seconds"] > 0 and eager["compile_warmup_seconds"] is None
        for a, b in zip(eager["history"], captured["history"]):
            for key in ("train_loss", "val_loss", "ema_val_loss"):
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key


def test_a_round_override_that_does_not_compose_stops_the_sweep_before_any_trial_as_under_the_basic_launcher(
        tmp_path: Path) -> None:
    """The sweeper composes every round's overrides before the first trial, whichever launcher runs them."""
    stage = "hydra.sweeper.stages=[{name:a,params:[optimizer.lr],rounds:[{trials:2,top_k:1,overrides:" \
            "['trainer.batch_size=abc']}]}]"
    errors = {}
    for launcher in ("basic", "population"):
        done = run_cli("-m", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false", stage,
                       f"hydra/launcher={launcher}", "data.subset=100", f"hydra.sweep.dir={tmp_path / launcher}",
                       cwd=tmp_path)
        assert done.returncode == 1 and not (tmp_path / launcher / "0").exists()
        errors[launcher] = [line for line in done.stderr.splitlines() if not line.startswith("[")]
    assert errors["population"] == errors["basic"]
    assert errors["population"][0] == ("Error in the config: hydra.sweeper.stages.0.rounds.0.overrides: "
                                       "trainer.batch_size=abc is not allowed: Value 'abc' of type 'str' could not be "
                                       "converted to Integer.")


def three_members(tmp_path: Path):
    """Three members' run records (batch norm, averaged weights) and the vmapped engine over them."""
    from expt.build import build
    from expt.trainer.record import RunRecord
    from expt.trainer.vmap import VmapEngine, capture_rng

    records = []
    for i, member in enumerate(MEMBERS[:3]):
        exp = build(expt.compose([*CONVNET, "regularization=[l2,batchnorm]", "trainer.ema=0.9", *member]))
        records.append(RunRecord(exp, tmp_path / str(i), dashboard=None))
    return records, VmapEngine(records, [capture_rng(torch.device("cpu")) for _ in records])


def test_members_measured_together_give_each_members_own_measurements(tmp_path: Path) -> None:
    """The vmapped evaluation of every member (eval mode, batch norm's running statistics, the averaged weights)
    against each member's own model measured alone."""
    records, engine = three_members(tmp_path)
    x, y = records[0].exp.data.x_train, records[0].exp.data.y_train
    for step in range(4):
        rows = torch.stack([torch.randperm(len(x), generator=torch.Generator().manual_seed(10 * step + m))[:32]
                            for m in range(len(records))])
        engine.step(x[rows], y[rows], [r.exp.schedule.rate(step) for r in records])
    engine.sync()
    together = engine.measure(records)
    alone = [r.measure() for r in records]
    assert [list(t) for t in together] == [list(a) for a in alone]  # the same keys, in the same order
    for t, a in zip(together, alone):
        assert t["val_acc"] == a["val_acc"] and t["train_acc"] == a["train_acc"] and t["ema_val_acc"] == a["ema_val_acc"]
        for key in ("val_loss", "train_data_loss", "ema_val_loss", "penalty"):
            assert t[key] == pytest.approx(a[key], rel=1e-6), key
    assert len({t["val_loss"] for t in together}) == len(records)  # three different members


def test_members_tested_together_give_each_members_own_test_numbers(tmp_path: Path) -> None:
    """The members' best models (of different steps, one of them the averaged weights) tested in one pass over
    their stacked weights, against each best model loaded into its member's model and tested alone, as a lone run's
    finish tests it; a member without a best model leaves every member to test its own."""
    from expt.predict import loss_and_accuracy

    records, engine = three_members(tmp_path)
    x, y = records[0].exp.data.x_train, records[0].exp.data.y_train
    assert engine.test(records) == [None, None, None]  # no best model yet
    for step in range(6):
        rows = torch.stack([torch.randperm(len(x), generator=torch.Generator().manual_seed(10 * step + m))[:32]
                            for m in range(len(records))])
        engine.step(x[rows], y[rows], [r.exp.schedule.rate(step) for r in records])
        if step in (1, 3, 5):  # member 0's best after 2 steps, member 1's averaged weights after 4, member 2's after 6
            engine.sync()
            r = records[(step - 1) // 2]
            model = r.ema.module if step == 3 else r.exp.model
            r.best = {**r.best, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    together = engine.test(records)
    data = records[0].exp.data
    for r, (loss, acc) in zip(records, together):
        r.exp.model.load_state_dict(r.best["state"])
        alone = loss_and_accuracy(r.exp.model, data.x_test, data.y_test)
        assert acc == alone[1] and loss == pytest.approx(alone[0], rel=1e-6)
    assert len({loss for loss, _ in together}) == len(records)  # three different models


def test_testing_together_gives_way_to_each_members_own_test_and_never_costs_a_checkpoint(tmp_path: Path, monkeypatch,
                                                                                          caplog) -> None:
    """Each member's last.pt is written before the members' best models are tested together: an error there lets
    each member test its own (the same numbers), and Ctrl-C there leaves every member resumable from its last
    epoch. A model of one's own with a buffer its state leaves out is tested with the member's own buffer."""
    from expt.trainer.vmap import VmapEngine

    def members(common: list[str] = CONVNET) -> list:
        return [expt.compose([*common, *m]) for m in MEMBERS[:2]]

    together = train_population(members(), [tmp_path / f"together{i}" for i in range(2)])

    def fails(self, records):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(VmapEngine, "test", fails)
    with caplog.at_level("WARNING", logger="expt.trainer.loop"):
        each = train_population(members(), [tmp_path / f"each{i}" for i in range(2)])
    assert "Testing the best models together failed (RuntimeError: out of memory): each run tests its own." in \
        caplog.text
    for t, e in zip(together, each):
        assert e["status"] == "completed"
        assert_same_run(t, e, 1e-6)

    def interrupted(self, records):
        raise KeyboardInterrupt

    monkeypatch.setattr(VmapEngine, "test", interrupted)
    dirs = [tmp_path / f"stopped{i}" for i in range(2)]
    caplog.clear()
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING", logger="expt.trainer.loop"):
        train_population(members(), dirs)
    assert caplog.text.count("Interrupted after epoch 2 and its checkpoint; checkpoints/last.pt holds epoch 2") == 2
    for d in dirs:
        assert torch.load(d / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 2
        assert json.loads((d / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()

    own = ["~model", "+model._target_=tests_helpers.ScaledMLP", *CONVNET[3:]]  # CONVNET less its model keys
    caplog.clear()
    with caplog.at_level("WARNING", logger="expt.trainer.loop"):
        together = train_population(members(own), [tmp_path / f"own{i}" for i in range(2)])
    assert "together failed" not in caplog.text  # tested together, the buffer taken from each member's model
    for i, cfg in enumerate(members(own)):
        assert_same_run(together[i], expt.train(cfg, run_dir=tmp_path / f"own-alone{i}"), 1e-5)


def test_an_error_that_stops_the_whole_population_leaves_each_members_best_model(tmp_path: Path, monkeypatch) -> None:
    """A full disk met by the shared engine (not one member's own write) stopped every member without its best.pt;
    the launcher's cleanup used to save them, and the trainer, which now keeps what any stop leaves, must too."""
    from expt.errors import StorageError
    from expt.trainer.vmap import VmapEngine

    measure = VmapEngine.measure
    calls = []

    def fail_second(self, records):
        calls.append(1)
        if len(calls) == 2:
            raise StorageError("the engine's scratch file could not be written (No space left on device)")
        return measure(self, records)

    monkeypatch.setattr(VmapEngine, "measure", fail_second)
    cfgs = [expt.compose([*CONVNET, "trainer.epochs=3", "trainer.checkpoint_interval=1000", *m]) for m in MEMBERS[:2]]
    dirs = [tmp_path / f"m{i}" for i in range(2)]
    with pytest.raises(StorageError):
        train_population(cfgs, dirs)
    assert all((d / "checkpoints" / "best.pt").is_file() for d in dirs)
    assert all(expt.load(d).epoch == 1 for d in dirs)
