"""The `peft-arena` command: one table of subcommands, each defined once (its arguments and a short handler
over the drivers; no library logic here).

User errors (bad config, missing paths, unknown names) print one line `error: <field>: <what is allowed>`
and exit 2, without a traceback; nothing already written is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from analysis import rewind as rewinding
from orchestrator.config import ConfigError, RewindConfig

REWIND = RewindConfig()  # `peft-arena rewind`'s defaults, shown in its help
EXIT_USER_ERROR = 2
DEFAULT_CONFIG = "quick"


def _quiet_libraries() -> None:
    """Our own MLflow tracking owns runs: transformers' callback must not create duplicates; and the
    libraries' info chatter (and Ray Tune's TensorBoard hint: sweeps log to MLflow) would bury the
    progress display."""
    os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars too
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    if not torch.cuda.is_available():  # said before anything imports DeepSpeed, which would warn it guessed
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


# ------------------------------------------------------------------------------------ the command table


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Callable[[argparse.Namespace], int]
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, options


def command(name: str, help: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> Callable:
    """Registers a handler as subcommand `name` with its arguments: the one place a command is defined."""
    def register(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, handler, arguments)
        return handler
    return register


CONFIG = arg("config", help="a sweep config: a YAML path or a shipped config's name (`peft-arena configs`)")
CONFIG_OPTION = arg("--config", default=DEFAULT_CONFIG, help="a YAML path or a shipped config (default: quick)")
SET = arg("--set", action="append", default=[], metavar="KEY=VALUE",
          help="override a config field, e.g. --set train.steps=20 (repeatable)")
SWEEP_DIR = arg("sweep_dir", help="a sweep's output dir (made by `peft-arena sweep`)")


def _load(args: argparse.Namespace) -> Any:
    from orchestrator import config

    return config.load(args.config, args.set)


def _say(text: str) -> None:
    from orchestrator.cli.console import console

    console.print(text, soft_wrap=True, highlight=False, markup=False)


# ------------------------------------------------------------------------------------------- commands


@command("assets", "fetch/convert the offline default model and data into the cache")
def cmd_assets(args: argparse.Namespace) -> int:
    from orchestrator.trials import assets

    for line in assets.prepare_all():
        print(line)
    return 0


@command("configs", "list the sweep configs shipped with the package")
def cmd_configs(args: argparse.Namespace) -> int:
    from orchestrator.config import shipped_configs

    for name, path in shipped_configs().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{name:24s} {first}")
    print("use a name wherever a config path goes (`peft-arena sweep quick --dry-run`); "
          "`peft-arena init NAME --from quick` writes one to edit")
    return 0


@command("init", "write a sweep config to edit, copied from a shipped one",
         arg("name", help="the new config's name; written to NAME.yaml here (or to the path given)"),
         arg("--from", dest="source", default=DEFAULT_CONFIG, help="the shipped config to start from"),
         arg("--task", metavar="TASK", help="also write TASK.yaml and TASK.jsonl (your own data) beside it, "
             "which the config then trains on and targets"),
         arg("--force", action="store_true", help="replace an existing file"))
def cmd_init(args: argparse.Namespace) -> int:
    from orchestrator import config

    target = config.init_config(args.name, args.source, args.force, args.task)
    print(f"wrote {target}; edit it, then: peft-arena sweep {target} --dry-run")
    return 0


@command("methods", "list the registered finetuning methods")
def cmd_methods(args: argparse.Namespace) -> int:
    from orchestrator.cli.console import print_methods

    print_methods()
    return 0


@command("run", "run one trial (no Ray)", CONFIG, SET,
         arg("--method", required=True, help="method name, e.g. lora, oft, ia3 (`peft-arena methods`)"),
         arg("--setting", action="append", default=[], metavar="KEY=VALUE", help="e.g. r=8 (repeatable)"))
def cmd_run(args: argparse.Namespace) -> int:
    from methods import registry
    from orchestrator import config
    from orchestrator.cli import console
    from orchestrator.results import sweep_analysis
    from orchestrator.storage.sweep_dir import Status, SweepDir, trial_name
    from orchestrator.trials import assets, models

    cfg = _load(args)
    setting = {}
    for text in args.setting:
        key, value = config.parse_override(text, "--setting")
        setting[".".join(key)] = value
    try:
        method = registry.get(args.method).name
        registry.get(method).resolve_setting(setting)
    except registry.UnknownMethodError as err:
        raise ConfigError(str(err)) from None
    where = SweepDir.of(cfg)
    where.check()
    models.resolve(cfg.model)  # a model path that cannot load is refused before anything is written
    where.claim(cfg, resume=None)  # a sweep dir of its runs: export, analyze, report, rewind and ui read it
    assets.ensure_for(assets.config_tasks(cfg))
    result = console.run_with_progress(cfg, method, setting, where.trial(trial_name(method, setting)))
    with where:
        results = where.collect()
        sweep_analysis.write_summary(cfg, results, sweep_analysis.front(cfg, results))
    console.print_table(cfg, [result])
    return 0 if result["status"] == Status.COMPLETED else 1


@command("sweep", "run a multi-objective sweep on Ray Tune + Optuna", CONFIG, SET,
         arg("--resume", action="store_true", help="continue the interrupted sweep in output_dir"),
         arg("--dry-run", action="store_true", help="validate and print the plan; start nothing"),
         arg("--address", help="Ray address: local | auto | host:port | ray://host:port"))
def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import config
    from orchestrator.cli import console
    from orchestrator.cli.progress import SweepProgress
    from orchestrator.storage.sweep_dir import SweepDir, has_final_point
    from orchestrator.sweep import conclude, tuner
    from orchestrator.sweep.describe import describe
    from orchestrator.sweep.placement import cluster_totals
    from orchestrator.sweep.plan import make_plan, num_samples
    from orchestrator.trials import assets

    cfg = _load(args)
    if args.address:
        cfg = config.validate(cfg.model_dump() | {"ray": cfg.ray.model_dump() | {"address": args.address}})
    plan = make_plan(cfg)
    SweepDir.of(cfg).check()  # object storage: credentials, bucket, the store answering (also on --dry-run)
    # a dry run against a running cluster (--address) says how many trials it can hold at once
    cluster = cluster_totals(cfg) if args.dry_run and args.address not in (None, "local") else None
    for line in describe(cfg, plan, cluster):
        _say(line)
    if args.dry_run:
        return 0
    assets.ensure_for(assets.config_tasks(cfg))
    finished = [r["trial_id"] for r in SweepDir.of(cfg).collect() if has_final_point(r)] if args.resume else []
    results = tuner.run(cfg, resume=args.resume, callbacks=[SweepProgress(num_samples(cfg, plan), finished)])
    concluded = conclude.conclude(cfg, results)
    console.print_table(cfg, results, concluded.front)
    if concluded.rewound is not None:
        console.print_rewind(concluded.rewound)
    if concluded.tracking_uri:
        _say(f"MLflow: {concluded.tracking_uri} (browse: peft-arena ui {SweepDir.of(cfg)})")
    return 0 if any(has_final_point(r) for r in results) else 1


@command("demo", "run the embedded quick sweep end to end and print the table", CONFIG_OPTION, SET)
def cmd_demo(args: argparse.Namespace) -> int:
    """A fresh sweep each time: an earlier demo's dir is replaced."""
    from orchestrator.storage.sweep_dir import SweepDir

    SweepDir.of(_load(args)).clear()
    args.resume, args.dry_run, args.address = False, False, None
    return cmd_sweep(args)


@command("analyze", "Pareto fronts, hypervolumes, budget-matched comparisons",
         arg("sweep_dir", nargs="?", help="a sweep's output dir"),
         arg("--published", metavar="MODEL/DOMAIN", help="analyse the paper's table, e.g. qwen2.5-7b/math"),
         arg("--regime", default="sft", choices=["sft", "rlvr"]),
         arg("--budget-factor", type=float, default=1.5, help="budgets within this factor are matched"),
         arg("--output", help="where --published writes its JSON (default: .)"),
         arg("--json", action="store_true"),
         arg("--geometry", action="store_true", help="also weight spectra, activation distortion, correlations"),
         arg("--all-checkpoints", action="store_true", help="geometry of every checkpoint, not only the final"),
         arg("--layer-stride", type=int, default=5, help="activation metrics on every k-th layer"))
def cmd_analyze(args: argparse.Namespace) -> int:
    from orchestrator.results import sweep_analysis
    from orchestrator.storage.sweep_dir import SweepDir

    if args.published:
        model, domain = (args.published.split("/", 1) + [""])[:2]
        result = sweep_analysis.analyze_published(model, domain, args.regime, Path(args.output or "."),
                                                  args.budget_factor)
    else:
        if not args.sweep_dir:
            raise ConfigError("analyze: give a SWEEP_DIR or --published MODEL/DOMAIN")
        with SweepDir.open(args.sweep_dir) as where:
            result, _ = sweep_analysis.analyze(where, args.budget_factor)
            written = [where.pareto]
            if args.geometry:
                from orchestrator.results import sweep_geometry

                geo = sweep_geometry.analyze(where, args.all_checkpoints, args.layer_stride)
                written += [where.geometry, where.geometry_section]
                best = geo["best_predictor_of_forgetting"]
                print("geometry: " + (f"best predictor of forgetting: {best['metric']} (Spearman {best['spearman']:+.3f}, "
                                      f"n={len(geo['rows'])})" if best else "too few points to correlate"))
                print(f"spectral analysis per checkpoint: {', '.join(f'{s:.1f} s' for s in geo['spectral_seconds'])}")
            sweep_analysis.log_outputs(where.load_config(), written)
            print(f"wrote {', '.join(str(p) for p in written)}")
    for line in sweep_analysis.summary_lines(result):
        print(line)
    if args.json:
        print(sweep_analysis.dump(result))
    return 0


@command("report", "one self-contained HTML report of a sweep", SWEEP_DIR,
         arg("--published", metavar="MODEL/DOMAIN", help="add the paper's points for comparison"))
def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.results import sweep_analysis
    from orchestrator.storage.sweep_dir import SweepDir

    with SweepDir.open(args.sweep_dir) as where:
        path = sweep_analysis.write_report(where, args.published)
        sweep_analysis.log_outputs(where.load_config(), [path])
        print(f"wrote {path} (self-contained; open it in any browser, offline)")
        return 0


@command("rewind", "path-wise rewinding of a sweep's trials to a better operating point", SWEEP_DIR,
         arg("--trial", action="append", help="trial id (repeatable; default: the front trials)"),
         arg("--path", dest="paths", action="append", choices=rewinding.PATHS,
             help=f"paths to walk (repeatable; default: {' and '.join(REWIND.paths)})"),
         arg("--alphas", help=f"{RewindConfig.model_fields['alphas'].description} (default {REWIND.alphas})"),
         arg("--select", choices=rewinding.RULES, help=f"the selection rule (default {REWIND.select})"),
         arg("--tau", type=float, help=f"{RewindConfig.model_fields['tau'].description} (default {REWIND.tau:g})"),
         arg("--delta", type=float, help=f"{RewindConfig.model_fields['delta'].description} (default {REWIND.delta:g})"))
def cmd_rewind(args: argparse.Namespace) -> int:
    """Front trials' (or --trial ones') paths scored on validation, one point picked by --select, scored
    once on test, saved as a checkpoint next to its trial."""
    from orchestrator.cli import console
    from orchestrator.config import rewind_options
    from orchestrator.results import sweep_rewind
    from orchestrator.storage.sweep_dir import SweepDir

    options = rewind_options({k: getattr(args, k) for k in ("paths", "alphas", "select", "tau", "delta")})
    with SweepDir.open(args.sweep_dir) as where:
        console.print_rewind(sweep_rewind.rewind_sweep(where, args.trial, options))
        return 0


@command("export", "write a trial's checkpoint or rewound point as a peft adapter or a merged model", SWEEP_DIR,
         arg("trial", nargs="?", help="trial id (or --front)"),
         arg("--to", required=True, help="the folder to write (with --front: one subfolder per front trial)"),
         arg("--step", type=int, help="a checkpoint step (default: the trial's last)"),
         arg("--rewound", action="store_true", help="the trial's rewound point (`peft-arena rewind`)"),
         arg("--front", action="store_true", help="every trial on the sweep's front"),
         arg("--merged", action="store_true", help="merged weights + tokenizer instead of an adapter"),
         arg("--force", action="store_true", help="replace a non-empty target folder"))
def cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.results import export
    from orchestrator.storage.sweep_dir import SweepDir

    with SweepDir.open(args.sweep_dir) as where:
        line = "peft-arena " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["export"] else ""
        if args.front == bool(args.trial):
            raise ConfigError("export: give a TRIAL or --front; allowed: exactly one of them")
        if args.front:
            written = export.export_front(where, Path(args.to), args.merged, args.force, line)
        else:
            written = [export.export(where, args.trial, Path(args.to), args.step, args.rewound, args.merged, args.force,
                                     line)]
        for record in written:
            print(f"{record['trial_id']}: {record['kind']} in {record['path']}"
                  + (f" (merged: {record['merged_because']})" if record.get("merged_because") else ""))
        return 0


@command("register", "put a trial's point into MLflow's model registry (transformers flavor)", SWEEP_DIR,
         arg("trial", help="trial id"), arg("--name", required=True, help="the registered model's name"),
         arg("--step", type=int, help="a checkpoint step (default: the trial's last)"),
         arg("--rewound", action="store_true", help="the trial's rewound point (`peft-arena rewind`)"),
         arg("--merged", action="store_true", help="merged weights instead of an adapter on the base model"))
def cmd_register(args: argparse.Namespace) -> int:
    """Loads back with `mlflow.transformers.load_model(models:/NAME/VERSION)`."""
    from orchestrator.results import export
    from orchestrator.storage.sweep_dir import SweepDir

    with SweepDir.open(args.sweep_dir) as where:
        done = export.register(where, args.trial, args.name, args.step, args.rewound, args.merged)
    print(f"{args.trial}: {done['kind']} registered as {done['model_uri']} (run {done['run_id']}); load it with "
          f"mlflow.transformers.load_model({done['model_uri']!r})")
    return 0


@command("doctor", "check this machine: packages, DeepSpeed, GPU, assets, disk, Ray, MLflow",
         arg("--address", help="a Ray cluster to check"), arg("--mlflow", help="an MLflow server URL to check"))
def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator.cli import doctor

    results = doctor.run_checks(args.address, args.mlflow)
    for status, what, fix in results:
        print(f"{status:4s}  {what}" + (f"  -> {fix}" if fix else ""))
    return 1 if any(status == "FAIL" for status, _, _ in results) else 0


@command("sync", "replay a sweep dir's local results into MLflow (idempotent)", SWEEP_DIR,
         arg("--tracking-uri", help="another store, e.g. http://127.0.0.1:5000"))
def cmd_sync(args: argparse.Namespace) -> int:
    """Also ends the sweep's run (with its story) when no trial is in flight: the sweep's own end may have
    found MLflow down."""
    from orchestrator import config
    from orchestrator.storage.sweep_dir import Status, SweepDir
    from orchestrator.sweep.tuner import close_sweep_run, outcome
    from orchestrator.tracking.mlflow_runs import Tracker

    with SweepDir.open(args.sweep_dir) as where:
        cfg = where.load_config()
        if args.tracking_uri:
            cfg = config.validate(cfg.model_dump() | {"tracking": cfg.tracking.model_dump() | {"uri": args.tracking_uri}})
        results = where.collect()
        tracker = Tracker(cfg)
        tracker.sync_all(results)
        if not any(r["status"] == Status.RUNNING for r in results):  # a sweep whose own end could not reach MLflow
            close_sweep_run(cfg, tracker, outcome(results), results)
        print(f"synced {len(results)} trial results of {cfg.name} to {tracker.uri} (parent run {tracker.parent_id})")
        return 0


@command("ui", "start the MLflow UI (or, with --study, optuna-dashboard) on a sweep", SWEEP_DIR,
         arg("--port", type=int, default=5000), arg("--host", default="127.0.0.1", help="bind address (default loopback only)"),
         arg("--study", action="store_true", help="optuna-dashboard on the sweep's Optuna study instead of MLflow"),
         arg("--password-file", help="beyond loopback: the MLflow admin password (else $MLFLOW_AUTH_ADMIN_PASSWORD)"),
         arg("--insecure", action="store_true", help="beyond loopback without authentication (warned)"))
def cmd_ui(args: argparse.Namespace) -> int:
    """Beyond loopback the MLflow UI asks for a login (user `admin`); trials logging to it then need
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in their environment."""
    from orchestrator.process import is_loopback
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.tracking import mlflow_runs, ui

    with SweepDir.open(args.sweep_dir) as where:
        cfg = where.load_config()
        if args.study:
            command_line, env, what = ui.study_dashboard(where, args.host, args.port, args.insecure), None, "optuna-dashboard"
            ready, page = "/api/studies", ""
        else:
            ready = "/health"
            command_line, env = ui.mlflow_ui(where, args.host, args.port, ui.admin_password(args.password_file), args.insecure)
            # creates the store and experiment if the sweep has not logged yet; opens on the trials
            page = "/" + mlflow_runs.Tracker(cfg).share_trials_view()
            what = "MLflow UI"
            if not is_loopback(args.host):
                print(f"binding to {args.host}: allowed Host headers: "
                      f"{command_line[command_line.index('--allowed-hosts') + 1]} (mlflow server --allowed-hosts)")
        if not is_loopback(args.host) and args.insecure:
            print(f"warning: {what} on {args.host} WITHOUT authentication: anyone who reaches the port sees every run",
                  file=sys.stderr)
        elif not is_loopback(args.host):
            print(f"{what} on {args.host}: log in as user admin")
        local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # where this machine reaches it
        return ui.serve(command_line, env, f"http://{local}:{args.port}", ready, lambda: print(
            f"{what} for sweep {cfg.name}: http://{args.host}:{args.port}{page}  (Ctrl-C to stop)", flush=True))


@command("eval", "score a model or a checkpoint on a suite",
         arg("--model", default="smollm2-135m", help="alias, local model dir or hub id"),
         arg("--adapter", help="a checkpoint dir of a trial (trials/<id>/checkpoints/step_N)"),
         arg("--suite", default="quick"), arg("--kind", choices=["target", "retention"], default="retention"),
         arg("--split", choices=["validation", "test"], default="test"),
         arg("--max-items", type=int, default=None), arg("--trust-pickle", action="store_true"),
         arg("--pool", type=int, default=0, help="Ray Data actors to shard over (0: in this process)"),
         arg("--output", help="write the scores as JSON here"))
def cmd_eval(args: argparse.Namespace) -> int:
    """In this process, or sharded over a Ray Data actor pool with --pool N (each actor loads the model once)."""
    from evals import sources, suites
    from orchestrator.cli import console
    from orchestrator.config import ModelConfig
    from orchestrator.trials import assets, scoring

    spec = {"model": ModelConfig(name=args.model, trust_pickle=args.trust_pickle).model_dump(), "checkpoint": args.adapter}
    try:
        assets.ensure_for(suites.suite_task_names(args.kind, args.suite))
        scores = scoring.score_spec(spec, args.kind, args.suite, args.split, args.max_items, args.pool)
    except (suites.TaskError, sources.SourceError) as err:
        raise ConfigError(str(err)) from None
    console.print_suite(scores)
    if args.output:
        from orchestrator.files import atomic_write_json

        atomic_write_json(Path(args.output), scores)
    else:
        print(json.dumps({"suite": scores["suite"], "score": scores["score"]}))
    return 0


@command("budget", "per method, the setting whose trainable count is nearest a budget",
         arg("--model", default="smollm2-135m",
             help="a bundled model config (smollm2-135m, qwen2.5-7b, llama-3.2-3b), a config.json, a model dir or a hub id"),
         arg("--budget", type=float, required=True, help="trainable parameters, e.g. 2e7"),
         arg("--method", action="append", help="only these methods (repeatable)"), arg("--json", action="store_true"))
def cmd_budget(args: argparse.Namespace) -> int:
    from methods import budget, registry
    from orchestrator.cli.console import print_budget

    if args.budget <= 0:
        raise ConfigError(f"--budget: {args.budget:g} must be > 0")
    try:
        model_config = budget.load_model_config(args.model)
        methods = [registry.get(m).name for m in args.method] if args.method else registry.names()
        rows = [budget.nearest(model_config, method, args.budget) for method in methods]
    except (budget.BudgetError, registry.UnknownMethodError) as err:
        raise ConfigError(str(err)) from None
    if args.json:
        print(json.dumps({"model": args.model, "budget": args.budget, "methods": rows}, indent=2))
    else:
        print_budget(args.model, args.budget, rows)
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-arena", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in COMMANDS.values():
        child = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        for flags, options in spec.arguments:
            child.add_argument(*flags, **options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].handler(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return 130

