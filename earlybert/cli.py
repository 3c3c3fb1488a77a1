"""The `earlybert` command: one subcommand per job; bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys

from earlybert.config import PathKind
from earlybert.errors import EarlyBertError

FILE, FOLDER = PathKind("file"), PathKind("folder")
# Each subcommand's path arguments and the kind of path each must be, checked before the command runs.
PATH_ARGUMENTS = {"shrink": {"model": FOLDER, "ticket": FILE}, "info": {"model": FOLDER}, "draw": {"run_dir": FOLDER},
                  "oneshot": {"model": FOLDER, "data": FILE},
                  "evaluate": {"predictions": FILE, "na_prob_file": FILE}, "report": {"run_dir": FOLDER}}


def check_paths(args: argparse.Namespace) -> None:
    """Refuse a path argument that is missing or of the wrong kind (a folder for a file, ...), in one line."""
    kinds = dict(PATH_ARGUMENTS.get(args.command, {}))
    if args.command == "evaluate":
        kinds["data"] = FOLDER if args.benchmark == "glue" else FILE
        kinds["model"] = FOLDER
    for name, kind in kinds.items():
        value = getattr(args, name)
        problem = kind.problem(value) if value is not None else None
        if problem:
            raise EarlyBertError(f"{name.replace('_', ' ')} {value} {problem}")


def _shrink(args: argparse.Namespace) -> None:
    from earlybert.models.checkpoint import check_output_dir, copy_tokenizer_files, load_model, write_dir_atomically
    from earlybert.ticket.shrink import shrink_model
    from earlybert.ticket.ticket import Ticket

    check_output_dir(args.output, args.overwrite)  # fail before the slow load
    ticket = Ticket.load(args.ticket)
    model = load_model(args.model)
    slim = shrink_model(model, ticket, fold_coefficients=args.fold_coefficients)

    def write(tmp):
        slim.save_pretrained(tmp)
        ticket.save(tmp / "ticket.json")
        copy_tokenizer_files(args.model, tmp)

    write_dir_atomically(args.output, write, overwrite=args.overwrite)
    print(f"wrote slim {type(slim).__name__} to {args.output}: heads {ticket.layer_heads()}, "
          f"ffn {ticket.layer_ffn()}")


def _info(args: argparse.Namespace) -> None:
    from earlybert.models.checkpoint import load_model
    from earlybert.report.text import model_info_lines

    model = load_model(args.model)
    if args.json:
        from earlybert.models.flops import accounting

        print(json.dumps(accounting(model, args.seq_len), indent=2))
    else:
        print("\n".join(model_info_lines(model, args.seq_len)))


def _demo(args: argparse.Namespace) -> None:
    from earlybert.recipes.demo import run_demo

    pretrain = [f"train.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []
    if args.pretrain_steps:  # keep the search limit inside the shorter run
        pretrain.append(f"search.max_search_steps={max(1, args.pretrain_steps // 2)}")
    finetune = [f"epochs={args.finetune_epochs}"] if args.finetune_epochs else []
    run_demo(args.output, overwrite=args.overwrite, pretrain_overrides=pretrain, finetune_overrides=finetune)


def _draw(args: argparse.Namespace) -> None:
    from earlybert.ticket.draw import draw_from_run

    ticket = draw_from_run(args.run_dir, args.heads_ratio, args.ffn_ratio, args.output, step=args.step,
                           ffn_scope=args.ffn_scope, overwrite=args.overwrite)
    print(f"wrote {args.output} (coefficients of step {ticket.metadata['step']}): heads kept "
          f"{ticket.layer_heads()}, ffn kept {ticket.layer_ffn()}")


def _oneshot(args: argparse.Namespace) -> None:
    from earlybert.recipes.oneshot import run_oneshot
    from earlybert.ticket.masks import MaskSpec

    spec = MaskSpec(args.heads_ratio, args.ffn_ratio, args.ffn_scope, args.min_heads_per_layer, args.ffn_round_to,
                    args.kv_groups)
    ticket = run_oneshot(args.model, args.method, args.output, spec, args.data, args.gguf_file, args.seq_len,
                         args.blocks, args.batch_size, args.overwrite)
    print(f"wrote {args.output} ({args.method}): heads kept {ticket.layer_heads()}, ffn kept {ticket.layer_ffn()}")


def _evaluate(args: argparse.Namespace) -> None:
    from earlybert.tasks.evaluation import evaluate_glue_files, evaluate_squad_files

    if args.benchmark != "lm" and not args.predictions:
        raise EarlyBertError(f"evaluate {args.benchmark} needs --predictions FILE")
    if args.benchmark == "lm":
        from earlybert.tasks.language_model import evaluate_lm_file

        if not args.model:
            raise EarlyBertError("evaluate lm needs --model, the folder of a causal LM (e.g. OUTPUT_DIR/model)")
        scores = evaluate_lm_file(args.model, args.data, args.seq_len, args.max_blocks, args.batch_size,
                                  args.gguf_file)
    elif args.benchmark == "squad":
        scores = evaluate_squad_files(args.data, args.predictions, args.na_prob_file)
    else:
        if not args.task:
            raise EarlyBertError("evaluate glue needs --task, e.g. --task sst2")
        scores = evaluate_glue_files(args.task, args.data, args.predictions)
    print(json.dumps(scores))


def _merge(args: argparse.Namespace) -> None:
    from earlybert.recipes.merge import run_merge

    record = run_merge(args.method, args.models, args.base, args.output, args.granularity, args.scale,
                       args.overwrite)
    print(f"wrote {len(args.models)} merged models ({record['method']}) to {args.output}/1 ... "
          f"{args.output}/{len(args.models)}")


def _report(args: argparse.Namespace) -> None:
    from earlybert.report.html import write_report

    print(f"wrote {write_report(args.run_dir)}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="earlybert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("pretrain", help="pretrain with ticket search: --config FILE [key=value ...] (--help: keys)")
    sub.add_parser("prepare", help="tokenize a pretraining corpus into the cache once, in parallel: --config FILE "
                   "[key=value ...] (the pretraining config)")
    sub.add_parser("finetune", help="fine-tune: glue|squad --config FILE [key=value ...] (--help: keys)")
    sub.add_parser("compare", help="full vs earlybert vs random (and one-shot tickets in pretraining) over seeds: "
                                   "--config FINETUNE.yaml|PRETRAIN.yaml [key=value ...] [compare.key=value ...] "
                                   "(--help: keys)")

    p = sub.add_parser("shrink", help="apply a ticket to a model folder and save the slim model")
    p.add_argument("--model", required=True, help="model folder (a plain HF model of a supported family, or slim)")
    p.add_argument("--ticket", required=True, help="ticket.json from a search, `draw` or `random_ticket`")
    p.add_argument("--output", required=True, help="folder to write the slim checkpoint to")
    p.add_argument("--fold-coefficients", action="store_true",
                   help="fold the ticket's coefficient values into the following linears")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_shrink)

    p = sub.add_parser("info", help="layers, heads and FFN kept per layer, params and FLOPs of a model folder")
    p.add_argument("model", help="model folder")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for the FLOP count")
    p.add_argument("--json", action="store_true", help="print the accounting as JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("draw", help="draw another ticket from the coefficients a search saved")
    p.add_argument("run_dir", help="run folder of a search (holds search/coefficients_step_*.safetensors)")
    p.add_argument("--heads-ratio", type=float, required=True, help="fraction of heads pruned per layer")
    p.add_argument("--ffn-ratio", type=float, required=True, help="fraction of FFN neurons pruned")
    p.add_argument("--ffn-scope", default=None, choices=["global", "layer"],
                   help="FFN ranking scope (default: the run's)")
    p.add_argument("--step", type=int, default=None,
                   help="check step whose coefficients to use (default: the drawn ticket's step, else the last)")
    p.add_argument("--output", required=True, help="ticket file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ticket file")
    p.set_defaults(func=_draw)

    p = sub.add_parser("oneshot", help="a ticket at step 0 from one-shot importance: magnitude, wanda (|W| x ||x||) "
                       "or flap (fluctuation), for search.ticket=FILE")
    p.add_argument("--model", required=True, help="model folder (or the folder of --gguf-file)")
    p.add_argument("--method", required=True, help="magnitude, wanda or flap")
    p.add_argument("--data", default=None, help="calibration text (.txt or .gz; wanda and flap)")
    p.add_argument("--gguf-file", default="", help="a GGUF file in --model to load instead")
    p.add_argument("--blocks", type=int, default=32, help="calibration blocks (default 32)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per calibration block (default 128)")
    p.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass (default 8)")
    p.add_argument("--heads-ratio", type=float, default=1 / 3, help="fraction of heads pruned per layer (1/3)")
    p.add_argument("--ffn-ratio", type=float, default=0.4, help="fraction of FFN neurons pruned (0.4)")
    p.add_argument("--ffn-scope", default="global", choices=["global", "layer"], help="FFN ranking scope")
    p.add_argument("--ffn-round-to", type=int, default=8, help="kept FFN widths a multiple of this (8)")
    p.add_argument("--min-heads-per-layer", type=int, default=1, help="never keep fewer heads (1)")
    p.add_argument("--kv-groups", default="keep", choices=["keep", "prune"], help="grouped-query heads (keep)")
    p.add_argument("--output", required=True, help="ticket file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ticket file")
    p.set_defaults(func=_oneshot)

    p = sub.add_parser("evaluate", help="score predictions like the official GLUE and SQuAD scripts, or a causal "
                       "LM's held-out perplexity (lm)")
    p.add_argument("benchmark", choices=["squad", "glue", "lm"])
    p.add_argument("--data", required=True, help="SQuAD dev JSON, a GLUE task folder with its dev file, or (lm) a "
                   "held-out text file (.txt or .gz, documents separated by blank lines)")
    p.add_argument("--predictions", default=None, help="predictions.json (SQuAD) or index<TAB>prediction TSV (GLUE)")
    p.add_argument("--model", default=None, help="lm: the causal LM's folder")
    p.add_argument("--gguf-file", default="", help="lm: a GGUF file in --model to load instead")
    p.add_argument("--seq-len", type=int, default=128, help="lm: tokens per block (default 128)")
    p.add_argument("--max-blocks", type=int, default=200, help="lm: blocks scored, from the file's start (default 200)")
    p.add_argument("--batch-size", type=int, default=8, help="lm: blocks per forward pass (default 8)")
    p.add_argument("--task", default="", help="GLUE task name")
    p.add_argument("--na-prob-file", default=None, help="SQuAD v2.0: question id -> no-answer score JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("merge", help="merge models fine-tuned from one base (RankMean, average, task arithmetic); "
                       "each output model keeps its own task head")
    p.add_argument("models", nargs="*", help="two or more fine-tuned model folders")
    p.add_argument("--base", required=True, help="the folder they were all fine-tuned from (e.g. the slim model)")
    p.add_argument("--method", default="rankmean", help="rankmean (default), average or task_arithmetic")
    p.add_argument("--granularity", default="layer", help="RankMean's module: layer (one layer's block) or tensor")
    p.add_argument("--scale", type=float, default=1.0,
                   help="task_arithmetic: base + scale x the sum of the task vectors (default 1.0)")
    p.add_argument("--output", required=True, help="folder for 1/, 2/, ... (one per model, in order) and merge.json")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_merge)

    p = sub.add_parser("report", help="write report.html and PNGs for a run folder")
    p.add_argument("run_dir", help="output_dir of a pretraining or fine-tuning run")
    p.set_defaults(func=_report)

    p = sub.add_parser("demo", help="run the embedded demo")
    p.add_argument("--output", default="runs/demo", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--pretrain-steps", type=int, default=0, help="pretraining steps (default: the demo config's)")
    p.add_argument("--finetune-epochs", type=float, default=0, help="fine-tuning epochs (default: the config's)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `earlybert` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pretrain"]:  # config-driven: `--config FILE key=value ...`
        from earlybert.recipes.pretrain import main as pretrain_main

        return pretrain_main(argv[1:])
    if argv[:1] == ["prepare"]:
        from earlybert.recipes.pretrain import prepare_main

        return prepare_main(argv[1:])
    if argv[:1] == ["finetune"]:
        from earlybert.recipes.finetune import main as finetune_main

        return finetune_main(argv[1:])
    if argv[:1] == ["compare"]:
        from earlybert.recipes.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars add nothing to a one-folder command
    try:
        check_paths(args)
        args.func(args)
    except EarlyBertError as e:
        print(f"earlybert {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
