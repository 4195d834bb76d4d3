"""The registries: filled by a package's own modules, and the one-line errors for a name that
no module declares."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cnn_pipeline import discovery, models
from cnn_pipeline.errors import UserError


@pytest.fixture
def package(tmp_path: Path) -> Iterator[ModuleType]:
    folder = tmp_path / "plugins_under_test"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "good.py").write_text("THING = 'good'\n")
    (folder / "helper.py").write_text("VALUE = 1\n")
    (folder / "_private.py").write_text("raise RuntimeError('never imported')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("plugins_under_test")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.startswith("plugins_under_test")]:
            del sys.modules[name]


def test_only_modules_that_declare_the_attribute_are_registered(package: ModuleType) -> None:
    assert discovery.declared(package, "THING") == {"good": "good"}


def test_an_unknown_name_gets_the_nearest_and_every_known_one(package: ModuleType) -> None:
    error = discovery.unknown_name("model.name", "goood", ["good"], package, "THING")
    assert str(error).startswith(
        "params.yaml: model.name = 'goood' is invalid: did you mean 'good'? "
        "Input should be one of 'good' (a module in src/cnn_pipeline/plugins_under_test/"
    )


def test_a_module_without_the_attribute_is_named(package: ModuleType) -> None:
    error = discovery.unknown_name("model.name", "helper", ["good"], package, "THING")
    assert "plugins_under_test/helper.py declares no THING: add one" in str(error)


def test_a_network_s_own_keys_are_strict_with_did_you_mean() -> None:
    params = {"model": {"name": "lenet5", "min_input_size": 28, "activation": "relu"}}
    params["model"] |= {"pooling": "max", "dropout_rate": 0.0, "droput_rate": 0.1}
    with pytest.raises(UserError) as raised:
        models.model_config(params)
    assert str(raised.value) == (
        "params.yaml: unknown key model.droput_rate: did you mean model.dropout_rate? "
        "fix or remove it"
    )
    del params["model"]["droput_rate"]
    params["model"]["dropout_rate"] = "0.1"
    with pytest.raises(UserError, match=r"model.dropout_rate = '0.1' is invalid"):
        models.model_config(params)
    del params["model"]["name"]
    with pytest.raises(UserError, match=r"model.name is missing: name one of the files"):
        models.model_config(params)
