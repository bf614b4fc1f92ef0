"""``ser data download``: fetch a public corpus archive from its official record, verify it and extract it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ser.cli._apps import console, data_app, print_json


@data_app.command("download")
def download_cmd(
    dataset: str = typer.Argument(..., help="dataset name: ravdess"),
    dest: Path = typer.Option(..., "--dest", "-d", help="folder to download and extract into (created if missing)"),
    url: str | None = typer.Option(
        None, "--url", help="archive URL (default: the official record; env SER_<NAME>_URL, e.g. SER_RAVDESS_URL)"
    ),
    checksum: str | None = typer.Option(
        None, "--checksum", help="expected archive checksum ALGO:HEX, md5 or sha256 (default: the published one)"
    ),
    api_url: str | None = typer.Option(
        None,
        "--api-url",
        help="Zenodo records API URL to read the expected checksum from (env SER_<NAME>_API_URL)",
    ),
    keep_archive: bool = typer.Option(
        False, "--keep-archive", help="keep the verified zip next to the extracted files"
    ),
    retries: int = typer.Option(5, "--retries", min=0, help="retries after connection errors and 5xx answers"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (no progress bar)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or status messages"),
) -> None:
    """Download a public corpus from its official record, verify its checksum and extract it into DEST.

    The archive streams into DEST/<file>.partial, and an interrupted run resumes from there (HTTP Range).

    Once the checksum matches, the zip is extracted safely (members escaping DEST are refused) and atomically.

    DEST/.ser_download.json records the URL, checksum and date; re-running on a complete folder does nothing.

    RAVDESS: Zenodo record 1188976, Audio_Speech_Actors_01-24.zip (about 208 MB), licence CC BY-NC-SA 4.0.

    Then ingest it with: ser data ingest --corpus ravdess DEST

    Example: ser data download ravdess --dest data/ravdess
    """
    from ser.data.download import fetch_dataset, get_dataset, parse_checksum

    spec = get_dataset(dataset)
    if checksum is not None:
        parse_checksum(checksum)
    if dest.exists() and not dest.is_dir():
        from ser.errors import SerError

        raise SerError(f"--dest is not a folder: {dest}")
    chatty = not (quiet or as_json)
    err = Console(stderr=True)

    def log(message: str) -> None:
        if chatty:
            err.print(f"[dim]{message}[/dim]", highlight=False, soft_wrap=True)

    result = fetch_dataset(
        spec,
        dest,
        url=url,
        checksum=checksum,
        api_url=api_url,
        keep_archive=keep_archive,
        progress=chatty,
        log=log,
        retries=retries,
    )
    if as_json:
        print_json(result.to_dict())
        return
    if result.skipped:
        console.print(
            f"[bold]{spec.name}[/bold] already complete in {result.dest} "
            f"({result.n_files} files, {result.checksum}); nothing to do",
            highlight=False,
            soft_wrap=True,
        )
    else:
        how = f", resumed from {result.resumed_from:,} bytes" if result.resumed_from and not result.restarted else ""
        console.print(
            f"[bold]{spec.name}[/bold] {result.n_files} files extracted into {result.dest} "
            f"({', '.join(result.entries[:3])}{', ...' if len(result.entries) > 3 else ''}); "
            f"{result.checksum} verified{how}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"licence: {result.licence}", highlight=False, soft_wrap=True)
    console.print(f"cite: {result.citation}", highlight=False, soft_wrap=True)
