"""trainer.cuda_graph: the training step captured as a CUDA graph and replayed, with the same numbers.

The capture itself needs a GPU (the CUDA tests at the end skip cleanly without one); everything
around it is checked here on the CPU: when a run's step can be captured and the reason it cannot,
the optimizer options that make it capturable, and that a learning rate held in a tensor and filled
in place every step (what the captured step reads) trains exactly as a Python float does.
"""

from __future__ import annotations

import pytest
import torch

import expt
from conftest import numbers
from expt.build import build, make_optimizer
from expt.capture import capturable_options, capture_blocker, capture_mode
from expt.config import validate
from expt.trainer import SingleEngine

SMALL = ["trainer.epochs=2", "data.subset=300"]
CUDA = torch.device("cuda")  # a device name only: the decisions below never touch a GPU


def test_the_step_is_captured_by_default_wherever_that_is_exact():
    cfg = expt.compose(SMALL)
    assert cfg.trainer.cuda_graph == "auto"
    assert capture_blocker(cfg, CUDA) is None
    assert capture_mode(cfg, CUDA) == (True, None)
    assert capture_mode(cfg, torch.device("cpu")) == (False, "the run trains on cpu, not CUDA")
    for extra in (["optimizer=nesterov"], ["optimizer=adamw"], ["optimizer=rmsprop"], ["trainer.amp=bf16"],
                  ["regularization=[l2,dropout,batchnorm,max_norm]"]):
        assert capture_blocker(expt.compose([*SMALL, *extra]), CUDA) is None, extra


@pytest.mark.parametrize("extra, reason", [
    (["trainer.compile=true"], "trainer.compile=true compiles the step instead"),
    (["trainer.amp=fp16"], "gradient scaler"),
    (["optimizer=adagrad"], "optimizer._target_=torch.optim.Adagrad has no capturable mode"),
])
def test_what_cannot_be_captured_says_why(extra, reason):
    cfg = expt.compose([*SMALL, *extra])
    assert reason in capture_blocker(cfg, CUDA)
    assert capture_mode(cfg, CUDA) == (False, capture_blocker(cfg, CUDA))  # auto falls back
    with pytest.raises(expt.ConfigError, match=r"trainer\.cuda_graph=true cannot capture this run's step: .*"
                                               + reason.split()[0]):
        capture_mode(expt.compose([*SMALL, *extra, "trainer.cuda_graph=true"]), CUDA)
    assert capture_mode(expt.compose([*SMALL, *extra, "trainer.cuda_graph=false"]), CUDA)[0] is False


def test_cuda_graph_true_on_a_cpu_run_is_a_config_error_and_a_typo_names_the_choices():
    with pytest.raises(expt.ConfigError, match="trainer.cuda_graph=true cannot capture .* trains on cpu"):
        build(expt.compose([*SMALL, "trainer.cuda_graph=true", "trainer.device=cpu"]))
    with pytest.raises(expt.ConfigError, match="trainer.cuda_graph='maybe' is not allowed: one of auto, true, false"):
        validate(expt.compose([*SMALL, "trainer.cuda_graph=maybe", "trainer.device=cpu"]))  # before any data is read


def test_capturable_options_hold_the_rate_in_a_tensor():
    adam = capturable_options(expt.compose(SMALL).optimizer, 3e-3, torch.device("cpu"))
    assert adam["capturable"] is True and isinstance(adam["lr"], torch.Tensor)
    assert float(adam["lr"]) == pytest.approx(3e-3)
    sgd = capturable_options(expt.compose([*SMALL, "optimizer=momentum"]).optimizer, 0.1, torch.device("cpu"))
    assert "capturable" not in sgd and float(sgd["lr"]) == pytest.approx(0.1)  # SGD keeps no step count


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_a_rate_filled_into_a_tensor_trains_as_a_float_rate_does(optimizer):
    """Eight steps through SingleEngine at changing rates: one optimizer takes them as Python floats, the
    other as one tensor filled in place (the captured step's way); the weights agree to rounding."""
    cfg = expt.compose([*SMALL, f"optimizer={optimizer}", "trainer.device=cpu", "regularization=[l2,batchnorm]"])
    plain, tensor = build(cfg), build(cfg)
    tensor.optimizer = make_optimizer(cfg, tensor.model, lr=torch.tensor(1.0), foreach=False)
    plain.optimizer = make_optimizer(cfg, plain.model, foreach=False)
    engines = [SingleEngine(plain), SingleEngine(tensor)]
    x, y = plain.data.x_train[:64], plain.data.y_train[:64]
    for step in range(8):
        lr = 1e-3 * (1 + step)
        losses = [engine.step(x, y, [lr]) for engine in engines]
        assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-6)
    assert float(tensor.optimizer.param_groups[0]["lr"]) == pytest.approx(8e-3)
    for a, b in zip(plain.model.parameters(), tensor.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)  # Adam normalises rounding-sized gradients too


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("extra", [
    ["regularization=[l2,dropout,batchnorm,max_norm]"],
    ["optimizer=nesterov", "optimizer.lr=0.05", "schedule=onecycle", "trainer.ema=0.9"],
    ["trainer.amp=bf16", "augmentation=[translate,hflip]"],
])
def test_captured_steps_train_as_uncaptured_steps_do(tmp_path, extra):
    """The same run with and without the captured step: the same history within float tolerance."""
    common = ["trainer.device=cuda", "trainer.epochs=3", "data.subset=700", *extra]  # a smaller last batch too
    exp = build(expt.compose([*common, "trainer.cuda_graph=true"]))
    assert exp.capture and exp.optimizer.param_groups[0]["lr"].is_cuda
    captured = expt.train(expt.compose([*common, "trainer.cuda_graph=true"]), run_dir=tmp_path / "captured")
    eager = expt.train(expt.compose([*common, "trainer.cuda_graph=false"]), run_dir=tmp_path / "eager")
    assert captured["compile_warmup_seconds"] > 0 and eager["compile_warmup_seconds"] is None
    tol = 2e-2 if "trainer.amp=bf16" in extra else 1e-3
    for a, b in zip(numbers(eager), numbers(captured), strict=True):
        assert b == pytest.approx(a, rel=tol, abs=tol)


@pytest.mark.cuda
@needs_cuda
def test_captured_weights_equal_uncaptured_weights_after_n_steps():
    """Twenty steps of one batch shape through both engines from the same init: equal weights within float tolerance."""
    common = ["trainer.device=cuda", "data.subset=300", "regularization=[l2,batchnorm]"]
    plain, graphed = build(expt.compose([*common, "trainer.cuda_graph=false"])), \
        build(expt.compose([*common, "trainer.cuda_graph=true"]))
    graphed.model.load_state_dict(plain.model.state_dict())
    engines = [SingleEngine(plain), SingleEngine(graphed)]
    x, y = plain.data.x_train[:64], plain.data.y_train[:64]
    for step in range(20):
        for engine in engines:
            engine.step(x, y, [1e-3 * (1 + step % 4)])
    assert len(engines[1].captured.graphs) == 1  # captured after its warm-up steps, replayed since
    for a, b in zip(plain.model.state_dict().values(), graphed.model.state_dict().values()):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@needs_cuda
def test_a_resumed_captured_run_ends_as_the_straight_one(tmp_path):
    common = ["trainer.device=cuda", "data.subset=400", "trainer.checkpoint_interval=0"]
    expt.train(expt.compose([*common, "trainer.epochs=2"]), run_dir=tmp_path / "short")
    longer = expt.train(expt.compose([*common, "trainer.epochs=4", f"trainer.resume={tmp_path / 'short'}"]),
                        run_dir=tmp_path / "longer")
    straight = expt.train(expt.compose([*common, "trainer.epochs=4"]), run_dir=tmp_path / "straight")
    for a, b in zip(numbers(straight), numbers(longer), strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
