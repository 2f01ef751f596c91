"""TorchTitan v0.2.2's own code, imported from a source checkout without a GPU.

TorchTitan is not on PyPI: point TORCHTITAN_SRC at a directory holding its
v0.2.2 `torchtitan/` package (for example `git archive v0.2.2 torchtitan
pyproject.toml | tar -x`). Two package `__init__.py` files import triton
(GPU only): `torchtitan/__init__.py` (float8/MX converter registration) and
`torchtitan/models/llama3/__init__.py` (the train spec). They are registered
here as bare namespace modules (a module with the right `__path__`), so the
model, its state-dict adapter, the checkpoint manager and the optimizer and
LR scheduler containers import unchanged; nothing of theirs is stubbed.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path


def source() -> Path | None:
    value = os.environ.get("TORCHTITAN_SRC")
    if not value:
        return None
    path = Path(value)
    return path if (path / "torchtitan" / "models" / "llama3" / "model" / "model.py").is_file() else None


def load(src: Path) -> types.SimpleNamespace:
    """The TorchTitan modules the tests use."""
    for name, rel in (("torchtitan", "torchtitan"), ("torchtitan.models", "torchtitan/models"),
                      ("torchtitan.models.llama3", "torchtitan/models/llama3")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(src / rel)]
            sys.modules[name] = module
    model = importlib.import_module("torchtitan.models.llama3.model.model")
    args = importlib.import_module("torchtitan.models.llama3.model.args")
    adapter = importlib.import_module("torchtitan.models.llama3.model.state_dict_adapter")
    checkpoint = importlib.import_module("torchtitan.components.checkpoint")
    optimizer = importlib.import_module("torchtitan.components.optimizer")
    lr_scheduler = importlib.import_module("torchtitan.components.lr_scheduler")
    config = importlib.import_module("torchtitan.config")
    return types.SimpleNamespace(Transformer=model.Transformer, ModelArgs=args.TransformerModelArgs,
                                 Adapter=adapter.Llama3StateDictAdapter, checkpoint=checkpoint,
                                 optimizer=optimizer, lr_scheduler=lr_scheduler, config=config)
