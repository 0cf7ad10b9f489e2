"""expt.overrides: an override's key and value as the command line writes them, and a parsed override's value."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from expt.overrides import override_key, split_override, value_text


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
