"""`earlybert merge`: merge models fine-tuned from one base into one body, each model keeping its own task head.

    earlybert merge --method rankmean --base SLIM_DIR RUN_A/model RUN_B/model --output merged/

writes merged/1/, merged/2/, ... (in the order the models were given): the merged body with that model's task head
and tokenizer, each a complete model folder, plus merged/merge.json (method, models, RankMean's weights per module).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from earlybert.errors import EarlyBertError
from earlybert.merging.methods import GRANULARITIES, METHODS, StateDict, merge, module_of


def body(model: nn.Module) -> StateDict:
    """The parameters of the shared body (the base model under `base_model_prefix`), named without the prefix."""
    prefix = f"{model.base_model_prefix}."
    state = model.state_dict()
    if not any(name.startswith(prefix) for name in state):  # a bare base model (AutoModel): all of it is body
        return dict(state)
    return {name[len(prefix):]: t for name, t in state.items() if name.startswith(prefix)}


def check_mergeable(folders: list[str], models: list[nn.Module], base_folder: str, base: nn.Module) -> None:
    """Refuse models of different families or shapes, and a base that is not their common parent, in one line."""
    types = [m.config.model_type for m in models]
    for folder, kind in zip(folders, types):
        if kind != types[0]:
            raise EarlyBertError(f"{folder} is a {kind} model, {folders[0]} a {types[0]} one: merge models of one "
                                 "family fine-tuned from one base")
    first = body(models[0])
    for folder, model in zip(folders[1:], models[1:]):
        other = body(model)
        for name in sorted(set(first) ^ set(other)):
            holder = folders[0] if name in first else folder
            raise EarlyBertError(f"tensor {name} is in {holder} only: merge models of one shape fine-tuned from one "
                                 "base")
        for name, tensor in first.items():
            if other[name].shape != tensor.shape:
                raise EarlyBertError(f"tensor {name} is {list(tensor.shape)} in {folders[0]} but "
                                     f"{list(other[name].shape)} in {folder}: merge models of one shape fine-tuned "
                                     "from one base")
    if base.config.model_type != types[0]:
        raise EarlyBertError(f"base {base_folder} is a {base.config.model_type} model, the models {types[0]}: pass the "
                             "folder they were fine-tuned from")
    parent = body(base)
    for name, tensor in first.items():
        if module_of(name) is not None and (name not in parent or parent[name].shape != tensor.shape):
            found = list(parent[name].shape) if name in parent else "missing"
            raise EarlyBertError(f"base {base_folder} is not the models' common parent: tensor {name} is {found} "
                                 f"there, {list(tensor.shape)} in the models; pass the folder they were fine-tuned "
                                 "from")


def check_arguments(method: str, granularity: str, folders: list[str], base: str, output: str,
                    overwrite: bool) -> None:
    """Every argument check that needs no model loaded."""
    from earlybert.models.checkpoint import check_output_dir

    if method not in METHODS:
        raise EarlyBertError(f"unknown merge method {method!r}: use one of {', '.join(METHODS)}")
    if granularity not in GRANULARITIES:
        raise EarlyBertError(f"unknown granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")
    if len(folders) < 2:
        raise EarlyBertError(f"merging needs at least 2 models, got {len(folders)}: give two or more model folders")
    for folder in (base, *folders):
        if not (Path(folder) / "config.json").is_file():
            raise EarlyBertError(f"{folder} is not a model folder (no config.json): pass a save_pretrained folder")
    resolved = Path(output).resolve()
    for folder in (base, *folders):
        if resolved == Path(folder).resolve() or resolved in Path(folder).resolve().parents:
            raise EarlyBertError(f"output {output} would replace the input {folder}: choose another folder")
    check_output_dir(output, overwrite)


def run_merge(method: str, folders: list[str], base_folder: str, output: str, granularity: str = "layer",
              scale: float = 1.0, overwrite: bool = False) -> dict:
    """Merge the models' bodies and write one complete model per input under `output`; returns merge.json's data."""
    from earlybert.models.checkpoint import copy_tokenizer_files, load_model, write_dir_atomically

    check_arguments(method, granularity, folders, base_folder, output, overwrite)
    models = [load_model(f) for f in folders]
    base = load_model(base_folder)
    check_mergeable(folders, models, base_folder, base)
    merged, weights = merge(method, [body(m) for m in models], body(base), granularity, scale)
    record = {"method": method, "granularity": granularity, "base": str(base_folder), "models": list(folders),
              "scale": scale if method == "task_arithmetic" else None,
              "weights": {module: dict(zip(map(str, range(1, len(folders) + 1)), w)) for module, w in weights.items()}}

    def write(tmp: Path) -> None:
        for i, (folder, model) in enumerate(zip(folders, models), start=1):
            model.base_model.load_state_dict(merged)  # a bare base model is its own base_model
            model.save_pretrained(tmp / str(i))
            copy_tokenizer_files(folder, tmp / str(i))
        (tmp / "merge.json").write_text(json.dumps(record, indent=1))

    write_dir_atomically(output, write, overwrite=overwrite)
    return record
