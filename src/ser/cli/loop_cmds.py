"""``ser loop run``: one pass of the closed loop (monitor → retrain when triggered → the registry's gate), for cron
or a systemd timer; ``ser loop events``: the passes recorded so far."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ser.cli._apps import app, console, print_json

loop_app = typer.Typer(help="The closed loop: monitoring report → retraining when drift or new feedback says so.")
app.add_typer(loop_app, name="loop", no_args_is_help=True)

CONFIG = typer.Option(..., "--config", help="loop YAML with a 'loop:' block (workdir, log, model, drift, pipeline)")


@loop_app.command("run")
def run_cmd(
    config: Path = CONFIG,
    check_only: bool = typer.Option(False, "--check-only", help="report whether it would retrain; record nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the pass as JSON"),
) -> None:
    """One pass: the monitoring report of the last window and the new feedback; when the report is flagged or
    enough new feedback arrived, the training pipeline (its register stage applies the promotion gate). Every pass
    is appended to the events file. Exits 1 when the pipeline failed, 0 otherwise.

    Example (cron, hourly): ser loop run --config /etc/ser/loop.yaml
    """
    from ser.jobs.loop import LoopJob, load_loop_config

    cfg = load_loop_config(config)
    if check_only:
        check = LoopJob(cfg).check()
        if as_json:
            print_json(check.to_dict())
        else:
            _print_check(check.to_dict())
        return
    from ser.pipeline import retrain

    outcome = LoopJob(cfg, retrain).run()
    data = outcome.to_dict()
    if as_json:
        print_json(data)
    else:
        _print_check(data)
        _print_result(data)
        console.print(f"recorded in {outcome.events_path}")
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
        raise typer.Exit(1)


def _print_check(d: dict) -> None:
    m = d["monitor"]
    if m.get("error"):
        console.print(f"monitor: {m['error']}")
    else:
        state = "[bold red]flagged[/]" if m["flagged"] else "ok"
        console.print(f"monitor {m['model']}: {m['predictions']} predictions, {m['feedback']} with feedback: {state}")
        for reason in m.get("reasons") or []:
            console.print(f"  {reason}")
    console.print(f"new feedback since the last retrain: {d['new_feedback']}")
    if d["triggered"]:
        console.print("[bold]retrain[/]: " + " | ".join(d["reasons"]))
    else:
        console.print("no trigger: nothing retrained")


def _print_result(d: dict) -> None:
    if not d["retrained"]:
        return
    dec = d.get("decision")
    if dec:
        verb = "registered" if dec["new"] else "nothing new registered (corpus and config unchanged);"
        console.print(f"{verb} {dec['name']} v{dec['version']} → [bold]{dec['alias']}[/] ({dec['reason']})")
        console.print(f"aliases: {dec['aliases']}")


@loop_app.command("events")
def events_cmd(
    config: Path = CONFIG,
    last: int = typer.Option(10, "--last", min=1, help="how many of the latest passes"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The latest passes of the loop (time, trigger reasons, registry decision).

    Example: ser loop events --config /etc/ser/loop.yaml --last 5
    """
    from ser.jobs.loop import load_loop_config, read_events

    events = read_events(load_loop_config(config).events_path)[-last:]
    if as_json:
        print_json(events)
        return
    for e in events:
        dec = e.get("decision") or {}
        what = (
            f"v{dec.get('version')} → {dec.get('alias')}{'' if dec.get('new') else ' (cached)'}"
            if dec
            else (e.get("error") or e.get("requested") or "-")
        )
        why = " | ".join(e.get("reasons") or []) or "no trigger"
        console.print(f"{e['started']}  {why}  {what}")
