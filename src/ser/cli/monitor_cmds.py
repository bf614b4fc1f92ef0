"""``ser monitor``: the monitoring report, retention and deletion over the prediction log; ``ser feedback import``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ser.cli._apps import app, console, print_json

monitor_app = typer.Typer(help="The prediction log: drift / quality / live-accuracy report, retention, deletion.")
app.add_typer(monitor_app, name="monitor", no_args_is_help=True)
feedback_app = typer.Typer(help="Feedback (true labels of logged predictions).")
app.add_typer(feedback_app, name="feedback", no_args_is_help=True)

LOG = typer.Option(..., "--log", help="log root: a folder or an fsspec URI (holds predictions/ and feedback/)")


@monitor_app.command("report")
def report_cmd(
    log: str = LOG,
    model: str = typer.Option(
        ..., "--model", help="model folder, or registry reference (ser-emotion@champion, ser-emotion/3) in --workdir"
    ),
    out: Path = typer.Option(..., "--out", help="output folder (report.json, report.html)"),
    workdir: Path | None = typer.Option(None, "--workdir", help="workdir whose registry --model names [$SER_WORKDIR]"),
    since: str | None = typer.Option(None, "--since", help="window start: ISO time or a span back (24h, 7d)"),
    until: str | None = typer.Option(None, "--until", help="window end (exclusive): ISO time or a span back [now]"),
    config: Path | None = typer.Option(None, "--config", help="YAML of DriftConfig thresholds"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Drift, input quality and live accuracy of a window of the log against the model's training reference.
    Exits 1 when a threshold is crossed (so a scheduler can act on it), 0 otherwise.

    Example: ser monitor report --log /var/lib/ser/log --model ser-emotion@champion --since 24h --out reports/today
    """
    from ser.jobs.monitor import MonitorReportJob

    report = MonitorReportJob(log, model, out, since, until, config, workdir).run()
    if as_json:
        print_json(report.data)
    else:
        s = report.summary()
        console.print(f"{s['predictions']} predictions, {s['feedback']} with feedback; window {s['window']}")
        console.print(f"report: {report.html_path}")
    for reason in report.reasons:
        print(f"threshold crossed: {reason}", file=sys.stderr)
    if report.flagged:
        raise typer.Exit(1)


@monitor_app.command("compare")
def compare_cmd(
    log: str = LOG,
    since: str | None = typer.Option(None, "--since", help="start: ISO time or a span back such as 24h"),
    until: str | None = typer.Option(None, "--until", help="end (exclusive): ISO time or a span back"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The served model against its shadow on the same requests: how often they agree, and with feedback both
    models' live UAR on the same labelled answers (95 % bootstrap CIs); or against its canary: each side's answers
    and live UAR on its own labelled answers, the difference's CI, and the canary's rollbacks. Exits 1 when there
    is neither a shadow answer paired with a served one nor a canary answer.

    Example: ser monitor compare --log runs/monitor --since 7d
    """
    from ser.jobs.monitor import CompareJob

    res = CompareJob(log, since, until).run()
    if as_json:
        print_json(res.to_dict())
    elif res.canary is not None:
        _print_canary(res.canary)
    elif res.paired == 0:
        console.print("no answer of a shadow model paired with the served model's in this window")
    if not as_json and res.paired:
        lo, hi = res.agreement_ci
        console.print(
            f"v{res.primary_version} vs shadow v{res.shadow_version}: {res.paired} paired answers, "
            f"agreement {100 * res.agreement:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f})"
        )
        if res.labelled:
            (a0, a1), (b0, b1), (d0, d1) = res.uar_primary_ci, res.uar_shadow_ci, res.uar_difference_ci
            console.print(
                f"with feedback on {res.labelled}: live UAR served {100 * res.uar_primary:.1f} % ({100 * a0:.1f}-"
                f"{100 * a1:.1f}), shadow {100 * res.uar_shadow:.1f} % ({100 * b0:.1f}-{100 * b1:.1f}); "
                f"shadow − served 95 % CI {100 * d0:+.1f} to {100 * d1:+.1f} points"
            )
    if res.paired == 0 and res.canary is None:
        raise typer.Exit(1)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _print_canary(c: dict) -> None:
    champ, can = c["champion"], c["canary"]
    console.print(
        f"canary v{c['canary_version']} vs champion v{c['champion_version']}: {can['answers']} vs "
        f"{champ['answers']} answers (canary share {100 * c['share']:.1f} %)"
    )
    console.print(
        f"live UAR: champion {_pct(champ['uar'])} on {champ['labelled']} labelled, canary {_pct(can['uar'])} on "
        f"{can['labelled']} labelled"
    )
    if c["uar_difference_ci"] is not None:
        lo, hi = c["uar_difference_ci"]
        console.print(f"canary − champion UAR 95 % CI {100 * lo:+.1f} to {100 * hi:+.1f} points")
    for e in c["rollbacks"]:
        console.print(f"[bold red]rolled back[/] v{e.get('version')} at {e.get('time')}: {e.get('reason')}")


@monitor_app.command("purge")
def purge_cmd(
    log: str = LOG,
    older_than_days: float = typer.Option(..., "--older-than-days", help="delete records older than this"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Retention: delete predictions and feedback older than N days (whole hours; the boundary hour rewritten).

    Example: ser monitor purge --log /var/lib/ser/log --older-than-days 30
    """
    from ser.jobs.monitor import PurgeJob

    counts = PurgeJob(log, older_than_days).run()
    if as_json:
        print_json(counts)
        return
    for table, c in counts.items():
        console.print(
            f"{table}: {c['hours_deleted']} hour(s), {c['files_deleted']} file(s) deleted, "
            f"{c['boundary_rows_deleted']} row(s) removed from the boundary hour"
        )


@monitor_app.command("delete")
def delete_cmd(
    ids: list[str] = typer.Argument(..., help="prediction ids (UUIDv7) to delete"),
    log: str = LOG,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete the predictions and feedback of given prediction ids (a deletion request); idempotent.

    Example: ser monitor delete --log /var/lib/ser/log 0192f0c4-5c1e-7a3b-9f00-3c2d1e0f4a5b
    """
    from ser.jobs.monitor import DeleteJob

    counts = DeleteJob(log, tuple(ids)).run()
    if as_json:
        print_json(counts)
    else:
        console.print(f"deleted {counts['predictions']} prediction row(s) and {counts['feedback']} feedback row(s)")


@feedback_app.command("import")
def import_cmd(
    csv: Path = typer.Argument(..., help="CSV with a header: prediction_id,label[,source,group,ts]"),
    log: str = LOG,
    classes: str | None = typer.Option(None, "--classes", help="comma-separated labels the feedback must be among"),
    no_check: bool = typer.Option(False, "--no-check", help="do not require the ids to be in the prediction log"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import true labels in bulk. Each row is checked like a feedback request (well-formed id, issued, label
    among the answering model's classes); bad rows are reported and skipped. Exits 1 when a row was rejected.

    Example: ser feedback import labels.csv --log /var/lib/ser/log
    """
    from ser.jobs.monitor import FeedbackImportJob

    wanted = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    res = FeedbackImportJob(log, csv, wanted, check_issued=not no_check).run()
    if as_json:
        print_json(res.to_dict())
    else:
        console.print(f"read {res.read} row(s): {res.imported} imported, {len(res.rejected)} rejected")
        for line, reason in res.rejected[:20]:
            print(f"line {line}: {reason}", file=sys.stderr)
    if res.rejected:
        raise typer.Exit(1)
