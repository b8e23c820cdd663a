"""The config is the front door: str or Path, validated on construction, round-trips through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.config import ConvertConfig, PreprocessOverrides, QatOptions
from pipeline.errors import UsageError
from pipeline.vocab import ColorMode, Recipe, Strategy
from targets import RunOptions, SshOptions

pytestmark = pytest.mark.fast


def test_strings_become_paths_and_enums():
    config = ConvertConfig(model="model.keras", calib="calib/", eval="eval.npz", out="build", recipe="int16x8",
                           targets="cortex-m4", preprocess={"scale": 1, "color_mode": "rgb"})
    assert config.model == Path("model.keras") and config.out == Path("build") and config.calib == Path("calib")
    assert config.recipe is Recipe.INT16X8
    assert config.targets == ("host", "cortex-m4")
    assert config.preprocess == PreprocessOverrides(scale=1.0, color_mode=ColorMode.RGB)


@pytest.mark.parametrize("changes, words", [
    ({"recipe": "int4"}, "recipe 'int4' is not one of: int8, int16x8"),
    ({"targets": ("host", "cortex-m99")}, "targets: unknown target 'cortex-m99'"),
    ({"calib_samples": 0}, "calib_samples must be a whole number at least 1"),
    ({"model": None}, "model is required"),
    ({"out": 3}, "out must be a path"),
    ({"overwrite": "yes"}, "overwrite must be true or false"),
    ({"preprocess": {"scale": "big"}}, "preprocess scale must be a number"),
    ({"preprocess": {"colour": "rgb"}}, "preprocess has unknown keys colour"),
    ({"run": {"runs": 0}}, "run option runs must be a whole number of at least 1"),
    ({"run": {"threads": 100000}}, "run option threads must be a whole number from 1 to 1024, not 100000"),
    ({"preprocess": {"scale": float("nan")}}, "must be a finite number, not nan; give a number such as 0.00392"),
    ({"preprocess": {"offset": float("-inf")}}, "must be a finite number, not -inf; give a number such as -1"),
    ({"run": {"emulate": True}}, "none of the targets host supports --emulate; targets that do: arm64, rpi4, rpi5"),
    ({"qat": {"train": "t.npz"}, "recipe": "float16"}, "quantization-aware training produces int8 models"),
    ({"qat": {"train": "t.npz"}}, "QAT stops early on the eval split"),
    ({"qat": {"train": "t.npz", "strategy": "tpu"}, "eval": "e.npz"}, "qat.strategy 'tpu' is not one of"),
    ({"qat": {"train": "t.npz", "epochs": -1}, "eval": "e.npz"}, "epochs must be a whole number at least 1"),
])
def test_a_bad_value_is_a_usage_error_naming_the_field(changes, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        ConvertConfig(**{"model": "m.keras", **changes})


def test_to_dict_round_trips_through_json():
    config = ConvertConfig(model="m.keras", calib="c.npz", eval="e.npz", recipe=Recipe.INT8, targets=("rpi4",),
                           run=RunOptions(runs=3, emulate=True), qat=QatOptions(train="t.npz", strategy="mirrored"),
                           preprocess=PreprocessOverrides(offset=-1.0))
    again = ConvertConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.qat.strategy is Strategy.MIRRORED and again.run.emulate is True
    ssh = RunOptions(ssh={"host": "pi@board", "port": 2222})
    assert ssh.ssh == SshOptions(host="pi@board", port=2222)
    assert RunOptions.from_dict(json.loads(json.dumps(ssh.to_dict()))) == ssh


def test_unknown_keys_are_named():
    with pytest.raises(UsageError, match="config has unknown keys colour, recipie"):
        ConvertConfig.from_dict({"model": "m.keras", "recipie": "int8", "colour": "rgb"})


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "", "  "])
def test_ssh_hosts_that_are_options_or_empty_are_refused(host):
    with pytest.raises(UsageError, match="is not a host name"):
        SshOptions(host=host)


def test_the_settings_schema_knows_every_config_field():
    # A field added to a config class must be added to the schema that checks -c files and report configs.
    from dataclasses import fields

    from pipeline.core.config import SETTINGS_SCHEMA, ConvertConfig, PreprocessOverrides, QatOptions
    from targets import RunOptions, SshOptions

    assert set(SETTINGS_SCHEMA) == {f.name for f in fields(ConvertConfig)}
    for name, cls in (("preprocess", PreprocessOverrides), ("qat", QatOptions), ("run", RunOptions)):
        assert set(SETTINGS_SCHEMA[name]) == {f.name for f in fields(cls)}, name
    assert set(SETTINGS_SCHEMA["run"]["ssh"]) == {f.name for f in fields(SshOptions)}
