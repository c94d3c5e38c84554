"""Serving fixtures: tiny random LoRA adapters made with peft, an engine over the tiny model."""

from __future__ import annotations

import pytest

from tests.support.serving import make_adapter


@pytest.fixture(scope="session")
def adapters(tiny_model_dir, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_model_dir, root / f"a{i}", seed=100 + i) for i in range(3)]


@pytest.fixture
def engine_factory(settings):
    from openft.serve.engine import Engine

    made = []

    def make(**overrides):
        s = settings.model_copy(update=overrides) if overrides else settings
        e = Engine(s, dtype="float32")
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


