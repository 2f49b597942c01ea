"""Every registered component honours the contract: importable, documented, a strict Config."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from bridge import registry
from bridge.errors import ConfigError

ENTRIES = [(role, name) for role, table in registry.ROLES.items() for name in sorted(table)]


@pytest.mark.parametrize(("role", "name"), ENTRIES, ids=[f"{r}:{n}" for r, n in ENTRIES])
def test_component_is_importable_documented_and_strict(role: str, name: str) -> None:
    cls = registry.load(role, name)
    assert inspect.isclass(cls)
    assert (cls.__doc__ or "").strip(), f"{role} {name} has no docstring"
    module = inspect.getmodule(cls)
    assert module is not None and (module.__doc__ or "").strip(), f"module of {role} {name} has no docstring"
    config = cls.Config
    assert config.model_config.get("extra") == "forbid", f"{role} {name}: Config must forbid unknown keys"
    with pytest.raises(ValidationError) as info:
        config.model_validate({"surely_not_a_key": 1})
    assert any(e["type"] == "extra_forbidden" for e in info.value.errors()) or info.value.errors()


def test_unknown_type_names_the_key_and_the_known_types() -> None:
    with pytest.raises(ConfigError) as info:
        registry.load("parser", "edifact", key="channels.x.parser.type")
    assert info.value.key == "channels.x.parser.type"
    assert "csv" in info.value.reason
