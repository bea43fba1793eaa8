"""`python -m training {train,evaluate,export,experiment,crossval,catalogue,synthesize,prepare}`:
argparse -> config -> call.

Flags that are not the command's own (`--optim.epochs=3`, `--network.block=shared_bottom`) override
config keys. Bad input ends with one clear `error:` line and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.artifact import ArtifactError
from training.config import Config, ConfigError, from_dict, load_config
from training.crossval import N_FOLDS
from training.data.raw import DataError
from training.experiment import default_jobs
from training.export import QUANTIZATIONS, ExportError
from training.report import markdown_table
from training.sasrec import LOSSES, SASRecConfig

if TYPE_CHECKING:  # torch is imported only by the commands that need it
    from training.network.recommender import MultiTaskRecommender
    from training.pipeline import Prepared


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args, overrides = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config overrides look like --optim.epochs=3")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's notes on torchvision
    try:
        return int(args.func(args, overrides))
    except (ConfigError, DataError, ExportError, ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.pipeline import train_and_export

    cfg = load_config(args.config, [*overrides, *([f"--name={args.name}"] if args.name else [])])
    result = train_and_export(
        cfg,
        args.data,
        args.out,
        args.reports,
        version=args.version,
        progress=not args.quiet,
        resume_from=args.resume,
        refit_all=args.refit,
    )
    if result is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    name, fit = result.artifact.parent.name, result.fit
    print(markdown_table(f"{name} (test split, held out)", result.metrics, result.baselines))
    print(f"best epoch {result.history.best_epoch} of {len(result.history.epochs)}")
    if fit.refit:
        print(
            f"refit on all of the data ({fit.epochs} epochs): {fit.events:,} events, "
            f"{fit.users:,} users, {fit.items:,} items; the figures above are its estimate"
        )
    print(f"artifact: {result.artifact}")
    print(f"report:   {result.report['md']} (+ .json, curves.png)")
    return 0


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.protocol import evaluate_baselines, evaluate_model

    model, raw, cfg, data = _from_checkpoint(args, overrides)
    if _refit(raw) and args.data in (None, raw["config"]["data"]):
        raise ConfigError(
            f"{args.checkpoint} was refit on all of {raw['config']['data']}, its test split "
            "included: its figures there would be measured on training data. Evaluate the "
            "held-out checkpoint beside it (heldout.pt), or give --data another source"
        )
    print(
        markdown_table(
            f"{args.checkpoint} on {args.data or raw['config']['data']} (test split)",
            evaluate_model(model, data, cfg),
            evaluate_baselines(data, cfg),
        )
    )
    return 0


def _export(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.evaluate import graph_predictor
    from training.export import export_artifact
    from training.pipeline import parity_inputs
    from training.protocol import evaluate_baselines, evaluate_model, protocol_metrics

    model, raw, cfg, data = _from_checkpoint(args, overrides)
    fit = raw.get("fit")
    if _refit(raw):
        if args.quantize:
            raise ConfigError(
                f"{args.checkpoint} was refit on all of the data: a quantised graph's figures "
                "would be measured on its training data; quantise the held-out checkpoint "
                "(heldout.pt) to see what int8 costs"
            )
        metrics = raw["estimate"]["metrics"]  # the evaluated run's: the refit's estimate
        details = {**raw["estimate"], "training": raw["config"], "fit": fit}
    else:
        metrics = evaluate_model(model, data, cfg)
        details = {
            "metrics": metrics,
            "baselines": evaluate_baselines(data, cfg),
            "training": raw["config"] | ({"quantize": args.quantize} if args.quantize else {}),
            "fit": fit,
        }

    def describe(graph: Path) -> dict[str, object]:
        """The quantised graph's own figures under the protocol."""
        predict = graph_predictor(graph, data.log, data.tasks, cfg.network.history_length)
        return {"metrics": protocol_metrics(data, cfg, predict)}

    target = export_artifact(
        model,
        data.vocabs,
        data.content,
        parity_inputs(data, cfg),
        args.out,
        cfg.name,
        details,
        version=args.version,
        quantize=args.quantize,
        describe=describe if args.quantize else None,
    )
    print(f"artifact: {target}")
    if args.quantize:
        quantized = json.loads((target / "manifest.json").read_text(encoding="utf-8"))["metrics"]
        print(f"| metric | float32 | {args.quantize} | change |\n|---|---:|---:|---:|")
        for key, value in metrics.items():
            print(f"| {key} | {value:.4f} | {quantized[key]:.4f} | {quantized[key] - value:+.4f} |")
    return 0


def _experiment(args: argparse.Namespace, overrides: list[str]) -> int:
    from training import content_report, experiment_report, quality_report
    from training.cold import random_figures
    from training.experiment import (
        COLD_INTERACTIONS,
        Base,
        content_grid,
        grid,
        load_runs,
        quality_grid,
        run_grid,
        save_results,
    )
    from training.pipeline import prepare
    from training.protocol import evaluate_baselines

    base = Base(args.config, tuple(overrides))
    cfg = load_config(base.config, base.overrides)  # a bad config fails here, before any run
    if args.seeds < 1 or args.jobs < 1:
        raise ConfigError("--seeds and --jobs must be >= 1")
    if args.grid == "content" and not cfg.features:
        raise ConfigError("--grid content needs a config with [[features]] to ablate")
    data = prepare(cfg, args.data, progress=not args.quiet)  # embeds the texts once, for all
    tasks = [t.name for t in cfg.tasks]
    variants = {
        "content": lambda: content_grid(cfg.features, args.quick),
        "quality": lambda: quality_grid(args.quick),
        "multitask": lambda: grid(tasks, args.quick),
    }[args.grid]()
    reuse = [run for path in args.reuse or () for run in load_runs(path)]
    runs = run_grid(base, args.data, variants, range(args.seeds), args.jobs, not args.quiet, reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "training", *args.argv])
    stem = {"content": "content", "quality": "quality"}.get(args.grid, "experiments")
    save_results(args.out / f"{stem}.json", runs, {"command": command, "data": args.data})
    baselines = evaluate_baselines(data, cfg)
    if args.grid == "content":
        random = random_figures(cfg.eval, data.tasks)
        path = content_report.write(args.out, runs, tasks, baselines, random, command)
    elif args.grid == "quality":
        against = {v.name: v.against for v in variants if v.against}
        path = quality_report.write(args.out, runs, tasks, baselines, command, against)
    else:
        path = experiment_report.write(args.out, runs, tasks, baselines, command, COLD_INTERACTIONS)
    print(f"report: {path} (+ {stem}.png, {stem}.json)")
    return 0


def _crossval(args: argparse.Namespace, overrides: list[str]) -> int:
    from training import crossval_report
    from training.crossval import check_source, run_folds, summarise, with_folds
    from training.experiment import Base
    from training.pipeline import prepare

    base = Base(args.config, tuple(overrides))
    cfg = load_config(base.config, base.overrides)  # a bad config fails here, before any run
    check_source(args.data, args.folds)
    if args.jobs < 1 or args.resamples < 1:
        raise ConfigError("--jobs and --resamples must be >= 1")
    data = prepare(with_folds(cfg, args.folds), args.data, progress=not args.quiet)
    folds = run_folds(base, args.data, args.folds, args.jobs, not args.quiet)
    results = summarise(folds, data.log, data.tasks, cfg.eval.k, args.resamples, not args.quiet)
    command = shlex.join(["python", "-m", "training", *args.argv])
    path = crossval_report.write(args.out, results, command)
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path} (+ crossval.png, crossval.json)")
    return 0


def _synthesize(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.data.synthesize import Size, synthesize

    if overrides:
        raise ConfigError("synthesize takes no config overrides")
    size = Size(args.users, args.items, args.interactions, args.factors, args.seed, args.shard_rows)
    written = synthesize(size, args.out, progress=not args.quiet)
    print(", ".join(f"{name}: {rows:,} rows" for name, rows in written.items()), f"in {args.out}")
    return 0


def _prepare(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.data.prepare import prepare_folder

    cfg = load_config(args.config, [*overrides, *([f"--name={args.name}"] if args.name else [])])
    if args.shard_events is not None and args.shard_events < 1:
        raise ConfigError("--shard-events must be >= 1")
    sizes = {} if args.shard_events is None else {"shard_events": args.shard_events}
    manifest = prepare_folder(
        cfg,
        args.data,
        args.out,
        args.memory_limit,
        **sizes,
        progress=not args.quiet,
        refit=args.refit,
    )
    print(
        f"{manifest['interactions']:,} interactions, {manifest['train_events']:,} training "
        f"events in {len(manifest['shards'])} shard(s), {manifest['n_users'] - 2:,} users, "
        f"{manifest['n_items'] - 2:,} items: {args.out} (train --data {args.out})"
    )
    if manifest["refit"]:
        print(f"the refit's shards: {manifest['refit']['events']:,} events (every interaction)")
    return 0


def _catalogue(args: argparse.Namespace, overrides: list[str]) -> int:
    from training.catalogue import add_items

    if overrides:
        raise ConfigError("catalogue takes no config overrides: the model's features are fixed")
    target, ignored = add_items(args.model, args.items, progress=not args.quiet)
    if ignored:
        print(f"ignored columns the model does not read: {', '.join(ignored)}")
    added = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    print(f"artifact: {target} ({added['vocabularies']['item_id']['size']} items)")
    return 0


def _sasrec(args: argparse.Namespace, overrides: list[str]) -> int:
    from service.repository import verify_folder
    from training.ranking_anchor import compare, save

    if overrides:
        raise ConfigError("sasrec takes the artifact's config; overrides are not allowed")
    if min(args.seeds, args.jobs, args.epochs, args.resamples) < 1:
        raise ConfigError("--seeds, --jobs, --epochs and --resamples must be >= 1")
    settings = SASRecConfig(epochs=args.epochs, loss=args.loss)
    results = compare(
        verify_folder(args.model), settings, range(args.seeds), args.jobs, args.resamples
    )
    path = save(results, args.out, shlex.join(["python", "-m", "training", *args.argv]))
    print(f"report: {path} (+ .png, .json)")
    return 0


def _refit_study(args: argparse.Namespace, overrides: list[str]) -> int:
    import tempfile

    from training import refit_report, refit_study

    cfg = load_config(args.config, overrides)
    if args.negatives < cfg.eval.k or args.resamples < 1:
        raise ConfigError("--negatives must be >= eval.k and --resamples >= 1")
    label = args.config.stem if args.config else "defaults"
    with tempfile.TemporaryDirectory(prefix="refit-study-") as scratch:
        work = args.work or Path(scratch)
        results = refit_study.run(
            cfg, label, args.data, work, args.negatives, args.resamples, not args.quiet
        )
    command = shlex.join(["python", "-m", "training", *args.argv])
    path = refit_report.write(args.out, f"refit-{label}", results, command)
    print(path.read_text(encoding="utf-8"))
    print(f"report: {path} (+ .png, .json)")
    return 0


def _from_checkpoint(
    args: argparse.Namespace, overrides: list[str]
) -> tuple[MultiTaskRecommender, dict[str, Any], Config, Prepared]:
    """The checkpoint's model, raw dict, config, and its data (or --data) prepared again."""
    from training.pipeline import prepare
    from training.train import load_checkpoint

    if overrides:
        raise ConfigError("evaluate/export use the checkpoint's config; overrides are not allowed")
    model, raw = load_checkpoint(args.checkpoint)
    stored = dict(raw["config"])
    source = str(stored.pop("data"))
    cfg = from_dict(stored)
    return model, raw, cfg, prepare(cfg, args.data or source)


def _refit(raw: dict[str, Any]) -> bool:
    """Whether a checkpoint's weights were refit on all of their data (training.refit)."""
    return bool(raw.get("fit", {}).get("refit"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(required=True)
    train = sub.add_parser("train", help="train, evaluate, export an artifact, write a report")
    train.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    train.add_argument(
        "--data", default="movielens", help="movielens | synthetic | a folder of CSV/Parquet tables"
    )
    train.add_argument(
        "--name",
        help="the model's name, models/<name>/ (default: the config's `name`; built-in sources "
        "are named after themselves, a data folder needs one)",
    )
    train.add_argument("--out", type=Path, default=Path("models"), help="model repository")
    train.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        help="where reports/<name>/<version>/ (report + checkpoint) go",
    )
    train.add_argument("--version", type=int, help="version to write (default: highest + 1)")
    train.add_argument(
        "--resume",
        type=Path,
        help="continue the run whose state this is (reports/<name>/training-state.pt, written "
        "after every epoch); same config and data, except optim.epochs and optim.patience",
    )
    train.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="publish the evaluated model, trained without the held-out data (for studies); "
        "by default the published model is refit on all of the data with the epochs, head "
        "tuning and temperatures the evaluated run chose, and carries its figures as the "
        "estimate",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)
    exp = sub.add_parser(
        "experiment", help="train the multi-task vs single-task grid, write the comparison"
    )
    exp.add_argument("--config", type=Path, help="TOML config every run starts from")
    exp.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    exp.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    exp.add_argument(
        "--jobs", type=int, default=default_jobs(), help="parallel runs (1 thread each)"
    )
    exp.add_argument(
        "--grid",
        choices=("multitask", "content", "quality"),
        default="multitask",
        help="multitask: single- vs multi-task variants -> experiments.md; content: the item "
        "content ablation (ids only, + features, shuffled text) -> content.md; quality: what "
        "each of issue 18's changes adds -> quality.md",
    )
    exp.add_argument("--quick", action="store_true", help="a smaller grid (CI, smoke runs)")
    exp.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        help="earlier results files (e.g. reports/quality.json): their runs of the same variant, "
        "seed and config are taken instead of trained again (the first file's where several "
        "match)",
    )
    exp.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=_experiment)
    cv = sub.add_parser(
        "crossval",
        help="k-fold profile holdout: a model per fold, figures over every user with bootstrap "
        "intervals, beside the baselines and a logistic-regression anchor -> crossval.md",
    )
    cv.add_argument("--config", type=Path, help="TOML config every fold trains")
    cv.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    cv.add_argument("--folds", type=int, default=N_FOLDS, help="folds of the users (k)")
    cv.add_argument(
        "--jobs", type=int, default=default_jobs(), help="folds trained at once (1 thread each)"
    )
    cv.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the users")
    cv.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    cv.add_argument("--quiet", action="store_true", help="no progress bars")
    cv.set_defaults(func=_crossval)
    syn = sub.add_parser(
        "synthesize", help="write a synthetic log of any size as Parquet shards (bounded memory)"
    )
    syn.add_argument("--users", type=int, required=True)
    syn.add_argument("--items", type=int, required=True)
    syn.add_argument("--interactions", type=int, required=True, help="in all, about")
    syn.add_argument("--out", type=Path, required=True, help="a new folder (--data takes it)")
    syn.add_argument("--factors", type=int, default=8, help="hidden factors per user and item")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--shard-rows", type=int, default=1_000_000, help="interactions per shard")
    syn.add_argument("--quiet", action="store_true", help="no progress bar")
    syn.set_defaults(func=_synthesize)
    prep = sub.add_parser(
        "prepare",
        help="vocabularies, split and sample shards of a log of any size (out of core, DuckDB)",
    )
    prep.add_argument("--data", required=True, help="a folder of tables (or movielens, synthetic)")
    prep.add_argument("--out", type=Path, required=True, help="the prepared folder (replaced)")
    prep.add_argument(
        "--config", type=Path, help="the TOML config training will use (tasks, features, L)"
    )
    prep.add_argument("--name", help="the model's name (a data folder needs one, as in train)")
    prep.add_argument(
        "--memory-limit", default="4GB", help="DuckDB's memory limit (it spills past it to disk)"
    )
    prep.add_argument(
        "--shard-events",
        type=int,
        help="training events per sample shard, whole users (default 250,000)",
    )
    prep.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="leave out the refit's shards (every event as a training event); the folder then "
        "trains with train --no-refit only, and prepare sorts and writes the log once, not twice",
    )
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=_prepare)
    cat = sub.add_parser(
        "catalogue", help="publish the next version of a model with new items (same weights)"
    )
    cat.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    cat.add_argument("--items", type=Path, required=True, help="new items, .csv or .parquet")
    cat.add_argument("--quiet", action="store_true", help="no progress bar")
    cat.set_defaults(func=_catalogue)
    sas = sub.add_parser(
        "sasrec",
        help="train SASRec, the ranking anchor, on a model's split and compare the model with "
        "it on the same test events -> sasrec.md (sasrec-ce.md with --loss ce)",
    )
    sas.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    sas.add_argument("--seeds", type=int, default=3, help="SASRec seeds (0, 1, ...)")
    sas.add_argument(
        "--jobs", type=int, default=default_jobs(), help="seeds trained at once (1 thread each)"
    )
    sas.add_argument(
        "--epochs", type=int, default=SASRecConfig.epochs, help="SASRec epochs at most"
    )
    sas.add_argument(
        "--loss",
        choices=LOSSES,
        default="bce",
        help="bce: each next item against one sampled item (the paper's); ce: a softmax over "
        "every trained item (RecBole's default)",
    )
    sas.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the users")
    sas.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    sas.set_defaults(func=_sasrec)
    study = sub.add_parser(
        "refit-study",
        help="keep each user's next interactions aside, train on the rest, and compare the "
        "refit with the held-out model on them through /predict -> refit-<config>.md",
    )
    study.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    study.add_argument("--data", default="movielens", help="movielens | synthetic | a folder")
    study.add_argument(
        "--negatives", type=int, default=100, help="untouched items the next item is ranked among"
    )
    study.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of users")
    study.add_argument(
        "--work",
        type=Path,
        help="keep the cut folder and both models here (default: a temporary folder); a folder "
        "of an earlier run of the same study is asked again without training",
    )
    study.add_argument("--out", type=Path, default=Path("reports"), help="folder of the report")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.set_defaults(func=_refit_study)
    for name, func, text in (
        ("evaluate", _evaluate, "print test metrics of a checkpoint"),
        ("export", _export, "export a checkpoint as a new artifact"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--checkpoint", type=Path, required=True)
        cmd.add_argument("--data", help="data source (default: the one it was trained on)")
        if name == "export":
            cmd.add_argument("--out", type=Path, default=Path("models"))
            cmd.add_argument("--version", type=int)
            cmd.add_argument(
                "--quantize",
                choices=QUANTIZATIONS,
                help="onnxruntime dynamic quantisation; prints its metrics beside float32's",
            )
        cmd.set_defaults(func=func)
    return parser


if __name__ == "__main__":
    sys.exit(main())
