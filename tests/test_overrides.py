"""expt.overrides: an override's key and value as the command line writes them, and a parsed override's value."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from expt.overrides import key_or_group, override_key, split_override, value_text


@pytest.mark.parametrize("text, key, value", [
    ("trainer.epochs=3", "trainer.epochs", "3"),
    ("+trainer.epochs=3", "trainer.epochs", "3"),
    ("++hydra.job.env_set.EXPT_SWEEP_LABEL='lr=1e-3 l2=0'", "hydra.job.env_set.EXPT_SWEEP_LABEL", "'lr=1e-3 l2=0'"),
    ("~regularization.dropout", "regularization.dropout", ""),
    ("optimizer.lr=interval(1e-4, 1e-2)", "optimizer.lr", "interval(1e-4, 1e-2)"),
    ("model=convnet", "model", "convnet"),
])
def test_an_override_splits_at_its_first_equals_sign_and_loses_its_prefix(text, key, value):
    assert split_override(text) == (key, value)
    assert override_key(text) == key


@pytest.mark.parametrize("text, written, rebuilt", [
    ("optimizer.lr=tag(log, interval(1e-5, 1e-1))", "tag(log, interval(1e-5, 1e-1))",
     "IntervalSweep(tags={'log'}, start=1e-05, end=0.1)"),
    ("model.hidden_dim=[64,128]", "[64,128]", "[64,128]"),
    ("+trainer.epochs=3", "3", "3"),
])
def test_a_parsed_overrides_value_is_the_text_the_command_line_wrote(text, written, rebuilt):
    (override,) = OverridesParser.create().parse_overrides([text])
    assert value_text(override) == written
    override.input_line = None  # made in code, without a line: rebuilt from the parsed value (a sweep as Hydra
    # prints it)
    assert value_text(override) == rebuilt


@pytest.mark.parametrize("text", [
    "optimizer.lr=1e-3", "+trainer.epochs=3", "++trainer.seed=2", "~regularization.dropout",
    "~regularization.dropout=0.5", "model=mlp", "model@foo=mlp", "+model@foo=mlp", "regularization=[l2,batchnorm]",
    "data.shape=[3,32,32]", "hydra.job.env_set.X='a=b c'", "+hydra.job.env_set.EXPT_SWEEP_LABEL='r1 j03 lr=1.4e-4'",
    "trainer.seed=${oc.env:SEED,0}", "x.y={a:1,b:2}", "data.root='/tmp/a=b'", "+experiment=fashion_mnist_convnet",
])
def test_the_key_from_the_text_is_the_key_hydra_parses(text):
    """What the dashboard's HParams read from a job's overrides without parsing them again."""
    parsed = OverridesParser.create().parse_override(text)
    assert key_or_group(text) == parsed.key_or_group
    assert text.startswith("~") == parsed.is_delete()
