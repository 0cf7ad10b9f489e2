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


@pytest.mark.parametrize("path", ["/runs/2026-12-07/10-00-00", "/my runs/a", "/runs/lr=1e-3,l2=1e-4", "/it's/here",
                                  "/back\\slash/x", "/ends\\", "/quote\\'s", "~/runs/a+b@c", "/runs/a+b@c",
                                  "/runs/jürgen", "/runs/日本"])
def test_a_value_written_into_a_printed_command_reads_back_as_itself_through_the_shell_and_hydra(path):
    """What expt prints for the user to run (resume with trainer.resume=..., continue a sweep in hydra.sweep.dir=...):
    one shell word that Hydra's override parser reads as that key set to that text; a plain path stays as it is."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from expt.overrides import shell_override

    word = shell_override("trainer.resume", path)
    (line,) = shlex.split(word)
    (override,) = OverridesParser.create().parse_overrides([line])
    assert override.key_or_group == "trainer.resume" and override.value() == path
    assert (word == f"trainer.resume={path}") == (path in ("/runs/2026-12-07/10-00-00", "/runs/a+b@c"))


@pytest.mark.parametrize("label", ["r2-j013 lr=3.1e-3 l2=1.2e-4", "it's", "C:\\runs\\a", "ends\\", "1e-3"])
def test_a_sweep_variable_is_read_back_by_hydra_as_the_same_string(label):
    """The coarse-to-fine sweeper hands each trial its label and round as ``hydra.job.env_set.KEY=<value>``: Hydra
    reads the value back as that string (a number too: an environment variable is text)."""
    from hydra_plugins.expt_sweeper._impl import _quote

    (override,) = OverridesParser.create().parse_overrides([f"hydra.job.env_set.EXPT_SWEEP_LABEL={_quote(label)}"])
    assert override.value() == label
