"""The GPU path (mixed precision, channels-last, torch.compile), checked on CPU where it also works.

The CUDA-only tests at the end skip cleanly on a machine without a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import expt
from conftest import numbers
from expt.dashboard import Dashboard
from expt.build import build
from expt.trainer import SingleEngine, Trainer

SMALL = ["trainer.epochs=2", "data.subset=300"]


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_runs_the_forward_pass_in_half_precision(tmp_path, amp, dtype):
    exp = build(expt.compose([f"trainer.amp={amp}", *SMALL]))
    engine = SingleEngine(exp)
    with engine.autocast():
        out = engine.step_model(exp.data.x_train[:8])
    assert out.dtype == dtype
    assert (engine.scaler is not None) == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    assert exp.model[0].weight.dtype == torch.float32  # the weights stay in full precision


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_matches_full_precision_closely(tmp_path, amp):
    full = expt.train(expt.compose(SMALL), run_dir=tmp_path / "full")
    half = expt.train(expt.compose([f"trainer.amp={amp}", *SMALL]), run_dir=tmp_path / amp)
    assert half["status"] == "completed"
    assert half["history"][-1]["val_loss"] == pytest.approx(full["history"][-1]["val_loss"], rel=0.05)
    assert numbers(half) != numbers(full)  # the setting took effect


def test_channels_last_keeps_the_numbers(tmp_path):
    exp = build(expt.compose(["trainer.channels_last=true", *SMALL]))
    engine = SingleEngine(exp)
    assert exp.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert exp.data.x_train.is_contiguous(memory_format=torch.channels_last)
    assert engine.step_model is exp.model

    plain = expt.train(expt.compose(SMALL), run_dir=tmp_path / "plain")
    last = expt.train(expt.compose(["trainer.channels_last=true", *SMALL]), run_dir=tmp_path / "cl")
    for a, b in zip(numbers(plain), numbers(last)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_reports_its_warm_up(tmp_path):
    overrides = ["model=mlp", "trainer.epochs=2", "data.subset=256", "trainer.batch_size=128"]  # one batch shape
    eager = expt.train(expt.compose(overrides), run_dir=tmp_path / "eager")
    compiled = expt.train(expt.compose(["trainer.compile=true", *overrides]), run_dir=tmp_path / "compiled")
    assert compiled["compile_warmup_seconds"] > 0 and eager["compile_warmup_seconds"] is None
    for a, b in zip(numbers(eager), numbers(compiled)):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-5)


def test_bad_amp_mode_is_a_config_error():
    with pytest.raises(expt.ConfigError, match="trainer.amp"):
        build(expt.compose(["trainer.amp=fp8"]))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_data_and_model_live_on_the_gpu(tmp_path):
    exp = build(expt.compose(["trainer.device=cuda", *SMALL]))
    assert exp.data.x_train.is_cuda and exp.data.y_val.is_cuda
    assert all(p.is_cuda for p in exp.model.parameters())


@pytest.mark.cuda
@needs_cuda
def test_step_loop_syncs_with_the_host_only_at_logging_steps(tmp_path):
    """CUDA's sync debug mode warns on every blocking host-device transfer; count them over one epoch."""
    cfg = expt.compose(["trainer.device=cuda", "trainer.log_every=1000", "data.subset=640", "trainer.batch_size=64",
                        "dashboard.update_ratio=false", "dashboard.histograms=false", "dashboard.filters=false",
                        "dashboard.graph=false"])
    exp = build(cfg)
    dashboard = Dashboard(tmp_path, cfg)
    trainer = Trainer.single(exp, tmp_path, dashboard)
    trainer.begin()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_steps()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        dashboard.close()
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    # 10 steps, one logging step at the end: its losses read back, and the epoch's mean
    assert len(syncs) <= 3, [str(w.message) for w in syncs]
