"""`tune dashboard`: optuna-dashboard on the studies in a storage, with the kept weights of their best trials."""

from __future__ import annotations

import click

from tuner.cli.common import storage_option


@click.command()
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The dashboard can delete studies: keep it on loopback unless trusted.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a web browser.")
def dashboard(storage: str | None, host: str, port: int, open_browser: bool) -> None:
    """Watch studies live in optuna-dashboard; Ctrl-C stops it.

    Shows every study in the storage, with plots, each study's spec and exports in its note, and the weights of
    the best trials (tune start --keep-top) for download on their trial pages.

    \b
    Examples:
      tune dashboard --open
      tune dashboard --storage postgresql://postgres@db:5432/tune --port 8081
    """
    from tuner.look import dashboard as board
    from tuner.storage import default_storage_url

    host = host.strip("[]")
    server = board.make_server(board.make_app(storage or default_storage_url()), host, port)
    url = board.server_url(server, host)
    warning = board.exposure_warning(host)
    if warning:
        click.echo(warning, err=True)
    click.echo(f"Dashboard on {url} (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    board.serve(server)
    click.echo("Dashboard stopped.", err=True)
