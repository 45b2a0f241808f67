"""The ``lsr1bench`` command line: ``validate`` and ``run`` a suite, ``report`` and ``compare`` results.

The only module that imports typer and rich. Every bad input ends here as a clear
message and exit code 2, before anything is written; torch is imported only once a
suite is known to be good and is about to run.
"""

from __future__ import annotations

import inspect
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup

from lsr1bench.grid import RunSpec, expand, parse_shard, ranks_in_use, select, shard
from lsr1bench.spec import SpecError, Suite, load_suite


def _unwrap(text: str | None) -> str | None:
    """A docstring's paragraphs as single lines, so the terminal wraps them, not the source.

    Typer's rich help keeps every newline of a docstring, which at another terminal width
    breaks sentences mid-line; blank lines (paragraphs) and indented or bulleted lines stay.
    """
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and line and not line[0].isspace() and not line.startswith(("- ", "* ")):
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


class _Conventions:
    """Help in the usual form: ``Usage: lsr1bench run [OPTIONS] SUITE``, flags without a
    type (``--dry-run / --no-dry-run``), paragraphs wrapped to the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.help = _unwrap(self.help)  # type: ignore[has-type]

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # Typer would show '<bool>', as if the flag took a value
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """Click's usage pieces, with ``SUITE`` rather than Typer's ``{SUITE}`` for an argument."""
        pieces = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        usual = {}
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and hasattr(param, "_usage_display_name"):
                name = param.display_name_raw + ("..." if param.nargs != 1 else "")
                usual[param._usage_display_name()] = name if param.required else f"[{name}]"
        return [usual.get(piece, piece) for piece in pieces]


class _Group(_Conventions, TyperGroup):
    pass


class _Command(_Conventions, TyperCommand):
    pass


class _App(typer.Typer):
    """``typer.Typer`` whose commands follow :class:`_Conventions` unless given a ``cls``."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark L-SR1 against first-order methods over YAML suites.",
)


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``0 runs``."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        from lsr1bench import __version__

        try:
            torch_version = metadata.version("torch")  # without importing torch (seconds)
        except metadata.PackageNotFoundError:
            torch_version = "not installed"
        python = ".".join(str(v) for v in sys.version_info[:3])
        _plain(_console(), f"lsr1bench {__version__} (python {python}, torch {torch_version})")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Benchmark L-SR1 against first-order methods over YAML suites."""

SuiteArg = Annotated[Path, typer.Argument(metavar="SUITE", help="the suite's YAML file")]

EXIT_BAD_INPUT = 2
EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # off a terminal (logs, CI, Slurm output files) keep run ids whole rather than 80 columns
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _bad_input(lines: list[str], source: str | None = None) -> typer.Exit:
    err = _console(stderr=True)
    head = f"{source}: " if source else ""
    noun = "problem" if len(lines) == 1 else "problems"
    err.print(f"[bold red]error:[/] {escape(head)}{len(lines)} {noun}")
    for line in lines:
        err.print(f"  {escape(line)}", highlight=False)
    return typer.Exit(EXIT_BAD_INPUT)


def _load(suite_path: Path) -> tuple[Suite, list[RunSpec]]:
    try:
        suite = load_suite(suite_path)
        runs = expand(suite)
    except SpecError as exc:
        raise _bad_input(exc.problems, str(suite_path)) from None
    return suite, runs


@app.command()
def validate(
    suite_path: SuiteArg,
    build: Annotated[
        bool,
        typer.Option(
            "--build/--no-build",
            help="build each plugin model and dataset once and check its output (--no-build: skip, "
            "for expensive datasets)",
        ),
    ] = True,
) -> None:
    """Check a suite and print its expanded runs (count and ids) without training."""
    suite, runs = _load(suite_path)
    if build:
        _check_builds(suite_path, suite, runs, download=False)
    out = _console()
    out.print(f"{escape(str(suite_path))}: suite '{escape(suite.name or '')}' is valid: {_plural(len(runs), 'run')}")
    for run in runs:
        out.print(f"  {run.run_id}  (epochs {run.epochs})")


def _check_builds(suite_path: Path, suite: Suite, runs: list[RunSpec], download: bool) -> None:
    """Exit 2 naming the key when a plugin model or dataset fails to build or has the wrong shape."""
    if not any(r.model_path or r.dataset_path for r in runs):
        return  # nothing but the tool's own models and datasets: no torch needed here
    from lsr1bench.execute.checks import check_builds

    report = check_builds(runs, suite, download=download)
    if report.problems:
        raise _bad_input(report.problems, str(suite_path))
    for note in report.notes:
        _console(stderr=True).print(f"[yellow]note:[/] {escape(note)}")


LIST_WHAT = ("optimizers", "models", "datasets")


def _default_text(value: Any, key: str) -> str:
    from lsr1bench.registry import names

    if value is None and key == "lr":
        return " / ".join(f"{rate:g} ({family})" for family, rate in names.FIRST_ORDER_LR.items())
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


@app.command("list")
def list_(
    what: Annotated[
        str | None,
        typer.Argument(
            metavar="optimizers|models|datasets", show_default=False, help="what to list (default: all three)"
        ),
    ] = None,
) -> None:
    """Show the optimizers, models and datasets a suite can name, with defaults and valid ranges."""
    from lsr1bench.registry import names, table

    if what is not None and what not in LIST_WHAT:
        from lsr1bench.spec import did_you_mean

        raise _bad_input([f"list: unknown '{what}'{did_you_mean(what, LIST_WHAT)}; give one of {', '.join(LIST_WHAT)}"])
    out = _console()
    shown = [what] if what else list(LIST_WHAT)
    if "optimizers" in shown:
        out.print("[bold]Optimizers[/] " + escape("(in a suite: optimizers: [{name: NAME, params: {SETTING: VALUE}}])"))
        for info in table.OPTIMIZER_TABLE.values():
            fixed = ", ".join(f"{k}={v!r}" for k, v in info.fixed.items())
            flags = ["second-order" if info.second_order else "first-order"]
            flags.append("step needs a closure" if info.needs_closure else "step(closure) calls it once")
            if info.protocol not in ("step", "closure"):  # the peers' protocols (table.PROTOCOLS)
                flags.append(f"protocol {info.protocol}")
            if info.requires:
                flags.append(f"optional extra: {escape(table.PEERS_INSTALL)}")
            out.print(f"\n[bold]{info.name}[/]: {escape(info.description)}")
            out.print(f"  {escape(info.cls)}({escape(fixed)}); {', '.join(flags)}", highlight=False)
            rows = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for column in ("  setting", "default", "valid values", "meaning"):
                rows.add_column(column, overflow="fold")
            for key, setting in {**info.settings, **info.layout}.items():
                rows.add_row(
                    f"  {key}",
                    _default_text(setting.default, key),
                    setting.allowed("null"),
                    escape(setting.description),
                )
            for small, large in info.rules:
                rows.add_row("  (rule)", "", f"{small} < {large}", "")
            out.print(rows)
        out.print(
            "\nOr any torch.optim.Optimizer subclass by import path (torch.optim.RMSprop, mypkg.opt:MyOpt): "
            "its constructor's keywords are its params."
        )
    if "models" in shown:
        out.print("\n[bold]Models[/] " + escape("(in a suite: models: [NAME, ...])"))
        rows = Table(box=None, pad_edge=False, header_style="dim")
        for column in ("  name", "batch norm", "init", "description"):
            rows.add_column(column, overflow="fold")
        for model in table.MODEL_TABLE.values():
            norm = "always" if model.batch_norm == "always" else "false (default) or true"
            rows.add_row(f"  {model.name}", norm, " | ".join(model.inits), escape(model.description))
        out.print(rows)
        out.print("Or a factory by import path (module:function) returning an nn.Module.")
    if "datasets" in shown:
        out.print("\n[bold]Datasets[/] " + escape("(in a suite: datasets: [NAME, ...])"))
        rows = Table(box=None, pad_edge=False, header_style="dim")
        for column in ("  name", "family", "L2 (weight_decay)", "source", "description"):
            rows.add_column(column, overflow="fold")
        for data in table.DATASET_TABLE.values():
            rows.add_row(
                f"  {data.name}",
                data.family,
                f"{names.WEIGHT_DECAY[data.family]:g}",
                data.source,
                escape(data.description),
            )
        out.print(rows)
        out.print("Or a factory by import path (module:function) returning (train, test, num_classes).")


def _shard_option(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise _bad_input([f"--shard: {exc}"]) from None


def _resume_command(suite_path: Path, options: dict[str, Any]) -> str:
    """The command that resumes this run: the same suite and options, without --force."""
    words = ["lsr1bench", "run", str(suite_path)]
    for flag, value in options.items():
        for one in value if isinstance(value, list) else [value]:
            if one is not None:
                words += [flag, str(one)]
    return " ".join(shlex.quote(w) for w in words)


@app.command()
def run(
    suite_path: SuiteArg,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--no-dry-run", show_default=False, help="print the runs and what would happen; train nothing"
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force/--no-force", show_default=False, help="rerun runs that already completed")
    ] = False,
    devices: Annotated[
        str | None,
        typer.Option("--devices", help="auto | cpu | cuda:0,cuda:1,... (default: the suite's, else auto)"),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", min=1, help="worker processes per device; CPU threads are split among them"),
    ] = None,
    shard_text: Annotated[
        str | None,
        typer.Option("--shard", metavar="i/N", help="run only shard i (0-based) of N, e.g. $SLURM_ARRAY_TASK_ID/4"),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="PATTERN",
            help="run only the runs whose id matches this shell pattern, e.g. '*-s1'; repeatable",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", help="results tree: OUTPUT/<suite>/<run id>/")] = Path("outputs"),
    data_root: Annotated[
        str | None,
        typer.Option("--data-root", help="where MNIST/CIFAR-10 live (else the suite's, else $LSR1BENCH_DATA)"),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug/--no-debug",
            show_default=False,
            help="print each failed run's traceback (else only its message and where it is)",
        ),
    ] = False,
) -> None:
    """Train every run of a suite, skipping runs already completed in OUTPUT."""
    suite, runs = _load(suite_path)
    shard_spec = _shard_option(shard_text)
    problems: list[str] = []
    if output.exists() and not output.is_dir():
        problems.append(f"--output: {output} exists and is not a directory")
    if devices is not None:
        from lsr1bench.spec import DEVICES_PATTERN

        if not DEVICES_PATTERN.match(devices.replace(" ", "")):
            problems.append(f"--devices: expected auto, cpu or cuda:0,cuda:1,..., got {devices!r}")
    if data_root is not None and not data_root.strip():
        problems.append("--data-root: must not be empty")
    runs_in_suite = len(runs)
    if only:
        try:
            runs = select(runs, only)
        except ValueError as exc:
            problems.append(f"--only: {exc}")
    if problems:
        raise _bad_input(problems)
    if data_root is not None:
        runs = [replace(r, data_root=data_root) for r in runs]
    selected = len(runs)  # the suite's runs, or those --only kept
    if shard_spec is not None:
        runs = shard(runs, *shard_spec)

    from lsr1bench import launch, scheduler  # imports torch: only once the input is known good

    try:
        device_list = scheduler.resolve_devices(devices or suite.devices or "auto", jobs or suite.jobs or 1)
    except scheduler.DeviceError as exc:
        raise _bad_input([f"--devices: {exc}"]) from None
    if launch.external_world_size() > 1:
        _run_as_torchrun_worker(suite, runs, output, force, dry_run, device_list)
        return
    gpus = list(dict.fromkeys(d for d in device_list if d.startswith("cuda")))
    too_many = [
        f"{path}: {ranks} ranks need {ranks} GPUs (one per rank), but {len(gpus)} "
        f"{'is' if len(gpus) == 1 else 'are'} in use here ({', '.join(gpus)}); use ranks <= {len(gpus)} "
        "or more devices (--devices)"
        for path, ranks in ranks_in_use(suite)
        if gpus and ranks > len(gpus)
    ]
    if too_many:
        raise _bad_input(too_many, str(suite_path))
    planned = scheduler.plan(runs, output, force=force)
    out = _console()
    subset_note = f" (shard {shard_spec[0]}/{shard_spec[1]} of {selected})" if shard_spec else ""
    if only:
        subset_note += f" (--only: {selected} of the suite's {runs_in_suite})"
    todo = [p for p in planned if p.action != "skip"]
    out.print(
        f"suite '{escape(suite.name or '')}': {_plural(len(planned), 'run')}{subset_note}, "
        f"{len(planned) - len(todo)} already done, {len(todo)} to run on {', '.join(device_list)}"
        f" -> {escape(str(output / (suite.name or '')))}"
    )
    if dry_run:
        for p in planned:
            out.print(f"  {p.spec.run_id}  {p.action}{f' ({p.reason})' if p.reason else ''}")
        return
    try:
        _check_builds(suite_path, suite, [p.spec for p in todo], download=True)
        scheduler.prepare_data([p.spec for p in todo])
    except scheduler.DataError as exc:
        raise _bad_input([str(exc)]) from None
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted before any run started; nothing was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if todo:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _bad_input([f"--output: cannot create {output}: {exc}"]) from None

    display = _Display(out, total=len(planned), done=len(planned) - len(todo))
    started = time.perf_counter()
    outcome = display.run(lambda on_event: scheduler.run_suite(todo, output, device_list, on_event))
    elapsed = time.perf_counter() - started
    _summary(out, planned, outcome, elapsed)
    _failed_tracebacks(output / (suite.name or ""), outcome, debug)
    if not outcome.interrupted:
        _targets_summary(out, output / (suite.name or ""), [p.spec.run_id for p in planned])
    if outcome.interrupted:
        err = _console(stderr=True)
        finished = sum(1 for p in planned if p.action == "skip") + sum(
            1 for s in outcome.statuses.values() if s in ("completed", "diverged")
        )
        err.print(
            f"[bold yellow]interrupted.[/] {finished} of {_plural(len(planned), 'run')} finished and kept; "
            "the unfinished ones are marked interrupted and resume from their last checkpoint.\nResume with:\n  "
            + escape(
                _resume_command(
                    suite_path,
                    {
                        "--devices": devices,
                        "--jobs": jobs,
                        "--shard": shard_text,
                        "--only": only,
                        "--output": output if output != Path("outputs") else None,
                        "--data-root": data_root,
                    },
                )
            )
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if any(s == "failed" for s in outcome.statuses.values()):
        raise typer.Exit(EXIT_FAILED_RUNS)


def _run_as_torchrun_worker(
    suite: Suite, runs: list[RunSpec], output: Path, force: bool, dry_run: bool, device_list: list[str]
) -> None:
    """This process is one rank of an external torchrun: train the runs with ranks == WORLD_SIZE.

    Rank 0 plans the resume, broadcasts it, writes the records and draws the progress;
    the other ranks train in step and print nothing. A failed run stops the worker (its
    process group may be unusable): resume with the same command.
    """
    from lsr1bench import launch, scheduler

    world = launch.external_world_size()
    mine = [r for r in runs if r.ranks == world]
    if not mine:
        found = ", ".join(str(r) for r in sorted({r.ranks for r in runs}))
        raise _bad_input(
            [f"ranks: torchrun started {world} processes (WORLD_SIZE), but no run of this suite has ranks: {world} "
             f"(its runs have ranks {found}); start torchrun with that many processes in all"]
        )  # fmt: skip
    use_cuda = device_list[0].startswith("cuda")
    try:
        parallel, device = launch.init_from_environment(use_cuda)
    except (RuntimeError, ValueError) as exc:
        _console(stderr=True).print(f"[bold red]error:[/] cannot join the process group: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED_RUNS) from None
    writer = parallel.is_writer
    out = _console() if writer else Console(quiet=True)
    failed = False
    try:
        planned = launch.plan_as_rank(parallel, mine, output, force)
        todo = [p for p in planned if p.action != "skip"]
        left = len(runs) - len(mine)
        out.print(
            f"suite '{escape(suite.name or '')}': {_plural(len(planned), 'run')} with ranks {world} "
            f"({left} with other ranks left for another launch), {len(planned) - len(todo)} already done, "
            f"{len(todo)} to run on {world} ranks ({parallel.backend}) -> {escape(str(output / (suite.name or '')))}"
        )
        if dry_run:
            for p in planned:
                out.print(f"  {p.spec.run_id}  {p.action}{f' ({p.reason})' if p.reason else ''}")
            return
        display = _Display(out, total=len(planned), done=len(planned) - len(todo))
        started = time.perf_counter()
        outcome = display.run(lambda on_event: launch.train_as_rank(parallel, device, todo, output, on_event))
        if writer:
            _summary(out, planned, outcome, time.perf_counter() - started)
        failed = any(s == "failed" for s in outcome.statuses.values())
    except scheduler.DataError as exc:
        _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        failed = True
    except KeyboardInterrupt:
        if writer:
            _console(stderr=True).print("[bold yellow]interrupted.[/] rerun the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        launch.shutdown()
    if failed:
        raise typer.Exit(EXIT_FAILED_RUNS)


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


class _Display:
    """Live grid progress and the active runs, or plain lines when not on a terminal."""

    def __init__(self, console: Console, total: int, done: int) -> None:
        self.console = console
        self.total = total
        self.done = done
        self.active: dict[str, dict[str, Any]] = {}
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("grid"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("grid", total=total, completed=done)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for col in ("run", "device", "epoch", "train loss", "test error %"):
            table.add_column(col, justify="left" if col in ("run", "device") else "right")
        for run_id, row in self.active.items():
            table.add_row(
                run_id,
                row.get("device", ""),
                f"{row.get('epoch', 0)}/{row.get('epochs', '?')}",
                _fmt(row.get("train_loss"), ".4f"),
                _fmt(row.get("test_error"), ".2f"),
            )
        return table

    def _render(self) -> Group:
        return Group(self.progress, self._table())

    def on_event(self, event: dict[str, Any]) -> None:
        kind, run_id = event["type"], event.get("run_id", "")
        if kind == "message":
            self.console.print(escape(event["text"]))
        elif kind == "start":
            self.active[run_id] = {"device": event.get("device", ""), "epochs": event.get("epochs")}
            if not self.live:
                self.console.print(f"start {run_id} on {event.get('device', '')}")
        elif kind == "resume":
            step = f" step {event['step']}" if event.get("step") else ""
            line = f"  {run_id} resumes from its checkpoint after epoch {event.get('epoch')}{step}"
            (self.progress.console if self.live else self.console).print(escape(line))
        elif kind == "epoch":
            row = self.active.setdefault(run_id, {})
            row.update({k: event.get(k) for k in ("epoch", "epochs", "train_loss", "test_error")})
            if not self.live:
                self.console.print(
                    f"  {run_id} epoch {event['epoch']}/{event['epochs']} "
                    f"train loss {_fmt(event.get('train_loss'), '.4f') or '-'} "
                    f"test error {_fmt(event.get('test_error'), '.2f')}%"
                )
        elif kind == "end":
            self.active.pop(run_id, None)
            self.done += 1
            self.progress.update(self.task, completed=self.done)
            error = f": {event['error']}" if event.get("error") else ""
            line = (
                f"[{self.done}/{self.total}] {run_id} {event['status']} "
                f"(test error {_fmt(event.get('test_error'), '.2f') or '-'}%, "
                f"{_fmt(event.get('seconds'), '.1f')} s){error}"
            )
            if self.live:
                self.progress.console.print(escape(line))
            else:
                self.console.print(escape(line))

    def run(self, job: Any) -> Any:
        if not self.live:
            return job(self.on_event)
        with Live(self._render(), console=self.console, refresh_per_second=4, transient=True) as live:

            def on_event(event: dict[str, Any]) -> None:
                self.on_event(event)
                live.update(self._render())

            return job(on_event)


def _summary(console: Console, planned: list[Any], outcome: Any, elapsed: float) -> None:
    counts: dict[str, int] = {}
    for p in planned:
        status = outcome.statuses.get(p.spec.run_id)
        if status is None:
            status = "skipped (done before)" if p.action == "skip" else "not started"
        counts[status] = counts.get(status, 0) + 1
    if outcome.results:
        table = Table(box=None, pad_edge=False, title=None)
        for col in ("run", "status", "epochs", "test error %", "train s", "wall s"):
            table.add_column(col, justify="left" if col in ("run", "status") else "right")
        for p in planned:
            result = outcome.results.get(p.spec.run_id)
            if result is None:
                continue
            table.add_row(
                p.spec.run_id,
                result["status"],
                f"{result.get('epochs_completed', '')}/{p.spec.epochs}",
                _fmt(result.get("test_error"), ".2f"),
                _fmt(result.get("train_seconds"), ".1f"),
                _fmt(result.get("seconds"), ".1f"),
            )
        console.print(table)
        for run_id, result in outcome.results.items():
            if result.get("status") == "failed":
                console.print(f"[red]{escape(run_id)} failed:[/] {escape(str(result.get('error')))}")
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(f"done in {elapsed:.1f} s: {parts}")


def _failed_tracebacks(folder: Path, outcome: Any, debug: bool) -> None:
    """Where each failed run's traceback is, or (``--debug``) the tracebacks themselves."""
    from lsr1bench.runner import TRACEBACK_FILE

    failed = [run_id for run_id, status in outcome.statuses.items() if status == "failed"]
    files = [folder / run_id / TRACEBACK_FILE for run_id in failed if (folder / run_id / TRACEBACK_FILE).is_file()]
    if not files:
        return
    err = _console(stderr=True)
    if debug:
        for file in files:
            _plain(err, f"--- {file} ---\n{file.read_text(errors='replace').rstrip()}")
    else:
        _plain(err, "tracebacks (or rerun with --debug): " + ", ".join(str(f) for f in files))


def _targets_summary(console: Console, folder: Path, run_ids: list[str]) -> None:
    """The headline of the suite just run (epochs to each target) and the full report's command."""
    from lsr1bench import reporting

    try:
        built = reporting.build_report(folder, run_ids=set(run_ids))
    except reporting.ReportError:
        return
    if any(cell.targets for cell in built.cells):
        _plain(console, "\nEpochs to target (median [min–max] over seeds; (k/n): seeds that reached it):\n")
        _plain(console, reporting.main_table(built))
    _plain(
        console,
        "Full report (seconds and gradient evaluations to target, final errors, plots):\n"
        f"  lsr1bench report {shlex.quote(str(folder))}",
    )


# --- report and compare (lsr1bench.reporting; never imports torch) ---

ResultsArg = Annotated[
    Path, typer.Argument(metavar="RESULTS_DIR", help="a suite's results folder or a folder of suites")
]


def _plain(console: Console, text: str) -> None:
    """Print Markdown as it is: "[1–2]" and "**" are data here, not rich markup."""
    console.print(text, markup=False, highlight=False)


@app.command()
def report(
    results_dir: ResultsArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="where report.md, the CSVs and plots/ go (default: RESULTS_DIR itself)"),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the plots (faster; no matplotlib)")] = False,
    plot_format: Annotated[
        str, typer.Option("--format", metavar="png|pdf|svg", help="file format of the plots")
    ] = "png",
    export_baseline: Annotated[
        Path | None,
        typer.Option("--export-baseline", metavar="FILE", help="also write the cells as a baseline JSON for compare"),
    ] = None,
) -> None:
    """Tables (epochs, seconds, gradient evaluations to target; final error; skips; performance
    profiles) and plots (test error and train loss against epochs, seconds and gradient
    evaluations; the performance profiles)."""
    from lsr1bench import reporting

    problems: list[str] = []
    if plot_format not in ("png", "pdf", "svg"):
        problems.append(f"--format: must be one of png, pdf, svg, got {plot_format!r}")
    if output is not None and output.exists() and not output.is_dir():
        problems.append(f"--output: {output} exists and is not a directory")
    if export_baseline is not None and export_baseline.is_dir():
        problems.append(f"--export-baseline: {export_baseline} is a directory; give a file name")
    if problems:
        raise _bad_input(problems)
    try:
        built = reporting.build_report(results_dir)
    except reporting.ReportError as exc:
        raise _bad_input([str(exc)]) from None
    try:
        written = reporting.write_report(built, output, plots=not no_plots, fmt=plot_format)
        baseline = reporting.export_baseline(built, export_baseline) if export_baseline is not None else None
    except reporting.ReportError as exc:
        raise _bad_input([str(exc)]) from None
    out = _console()
    _plain(out, reporting.main_table(built))
    files = [written.report_md, *written.csv_files]
    plots = written.plot_files
    plots_note = f", {_plural(len(plots), 'plot')} in {plots[0].parent}" if plots else ""
    _plain(out, f"wrote {', '.join(str(f) for f in files)}{plots_note}")
    if baseline is not None:
        _plain(out, f"baseline: {baseline}")
    missing = reporting.missing_lines(built)
    if missing:
        _plain(out, f"{len(missing)} missing or incomplete (see report.md):")
        for line in missing:
            _plain(out, f"  {line}")
    else:
        _plain(out, "nothing missing or incomplete")


@app.command()
def compare(
    base: Annotated[Path, typer.Argument(metavar="BASE", help="results folder or baseline JSON file")],
    current: Annotated[Path, typer.Argument(metavar="CURRENT", help="results folder or baseline JSON file")],
    spread: Annotated[
        float,
        typer.Option("--spread", help="widen the base's range over seeds by this many times its width"),
    ] = 1.0,
    epochs_tol: Annotated[
        float, typer.Option("--epochs-tol", help="floor of the epochs-to-target margin, in epochs")
    ] = 1.0,
    epochs_pct: Annotated[
        float, typer.Option("--epochs-pct", help="floor of the epochs margin, % of the base median (larger wins)")
    ] = 10.0,
    error_tol: Annotated[
        float, typer.Option("--error-tol", help="floor of the final test error margin, percentage points")
    ] = 1.0,
    loss_pct: Annotated[
        float, typer.Option("--loss-pct", help="floor of the final train loss margin, % of the base median")
    ] = 20.0,
    skip_tol: Annotated[
        float, typer.Option("--skip-tol", help="floor of the skipped updates margin, percentage points")
    ] = 5.0,
    paired_pct: Annotated[
        float,
        typer.Option("--paired-pct", help="floor of the mean train loss margin, % change of each seed against itself"),
    ] = 2.0,
    radius_factor: Annotated[
        float,
        typer.Option("--radius-factor", help="how many times outside the base's range over seeds the final "
                     "trust-region radius may go, either way (>= 1)"),
    ] = 3.0,
    time_pct: Annotated[
        float | None,
        typer.Option("--time-pct", metavar="P", help="gate training time at +P % (default: reported only)"),
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown-out", metavar="FILE", help="also write the Markdown diff to FILE")
    ] = None,
) -> None:
    """Diff CURRENT against BASE; exit 1 when a cell regressed beyond the base's spread, else 0.

    A quantity regresses when its median over seeds is above the base's max over seeds plus
    max(floor, SPREAD x the base's max - min), for epochs to each target, the final test
    error and train loss and the skipped updates. A seed that never reaches a target counts
    as +inf epochs: a target regresses when its median turns infinite, or when more seeds
    miss it than the base's misses + max(1, SPREAD x those misses). The mean train loss over
    the epochs is compared seed by seed: it regresses when the median change exceeds
    max(PAIRED_PCT %, SPREAD x the base's range over seeds of the final train loss, in % of
    its median). The final trust-region radius regresses when its median leaves the base's
    range over seeds widened RADIUS_FACTOR times each way. Also:
    more seeds diverge or fail, fewer seeds, missing or incomplete runs. The rule is printed.
    """
    from lsr1bench import reporting

    negative = [
        f"{flag}: must be >= 0, got {value:g}"
        for flag, value in (
            ("--spread", spread),
            ("--epochs-tol", epochs_tol),
            ("--epochs-pct", epochs_pct),
            ("--error-tol", error_tol),
            ("--loss-pct", loss_pct),
            ("--skip-tol", skip_tol),
            ("--paired-pct", paired_pct),
            ("--time-pct", time_pct),
        )
        if value is not None and value < 0
    ]
    if not radius_factor >= 1.0:
        negative.append(f"--radius-factor: must be >= 1, got {radius_factor:g}")
    if negative:
        raise _bad_input(negative)
    try:
        tolerances = reporting.Tolerances(
            spread=spread,
            epochs=epochs_tol,
            epochs_percent=epochs_pct,
            final_error=error_tol,
            loss_percent=loss_pct,
            skip_rate=skip_tol,
            paired_percent=paired_pct,
            radius_factor=radius_factor,
            wall_clock_percent=time_pct,
        )
    except ValueError as exc:
        raise _bad_input([str(exc)]) from None
    if markdown_out is not None and markdown_out.is_dir():
        raise _bad_input([f"--markdown-out: {markdown_out} is a directory; give a file name"])
    try:
        comparison = reporting.compare_paths(base, current, tolerances)
    except reporting.ReportError as exc:
        raise _bad_input([str(exc)]) from None
    text = reporting.to_markdown(comparison)
    if markdown_out is not None:
        try:
            markdown_out.parent.mkdir(parents=True, exist_ok=True)
            from lsr1bench.records import atomic_write_text

            atomic_write_text(markdown_out, text)
        except OSError as exc:
            raise _bad_input([f"--markdown-out: cannot write {markdown_out}: {exc}"]) from None
    _plain(_console(), text)
    raise typer.Exit(comparison.exit_code)


export_app = _App(cls=_Group, no_args_is_help=True, help="Write run records in another tool's format.")
app.add_typer(export_app, name="export")


@export_app.command("tensorboard")
def export_tensorboard(
    results_dir: ResultsArg,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="folder for the event files (OUT/<suite>/<run id>/)")],
) -> None:
    """Each run's per-epoch scalars and settings as TensorBoard events: tensorboard --logdir OUT.

    Needs the optional extra: pip install -e ".\\[tensorboard]".
    """
    from lsr1bench.reporting import ReportError
    from lsr1bench.reporting.tensorboard import export_tensorboard as write_events

    if out.exists() and not out.is_dir():
        raise _bad_input([f"OUT: {out} exists and is not a directory"])
    try:
        written = write_events(results_dir, out)
    except ReportError as exc:
        raise _bad_input([str(exc)]) from None
    view = f"view them with: tensorboard --logdir {out}"
    _plain(_console(), f"wrote {_plural(len(written), 'run')}' events under {out}; {view}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
