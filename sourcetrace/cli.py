"""``sourcetrace`` command line: one sub-command per job, each handled by a function in its module.

Handlers are imported only when their command runs, so ``sourcetrace --help`` stays instant and a
corpus build never imports Ray. A ``SourcetraceError`` is printed as one line (exit 2), not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sourcetrace import interrupt
from sourcetrace.errors import SourcetraceError

# command -> "module:function"; every function takes the parsed argparse.Namespace and returns an exit code.
HANDLERS = {
    "corpus build": "sourcetrace.data.corpus:cli_build",
    "corpus check": "sourcetrace.data.check:cli_check",
    "train": "sourcetrace.training.loop:cli_train",
    "sweep": "sourcetrace.sweep:cli_sweep",
    "report": "sourcetrace.report:cli_report",
    "ui": "sourcetrace.ui:cli_ui",
    "analyze": "sourcetrace.evaluation.analyze:cli_analyze",
    "evaluate": "sourcetrace.evaluation.evaluate:cli_evaluate",
    "enroll": "sourcetrace.attribution:cli_enroll",
    "trace": "sourcetrace.attribution:cli_trace",
    "export": "sourcetrace.bundle.export:cli_export",
}
MODEL_HELP = "a bundle, or a run, checkpoint or sweep folder (exported to a bundle on first use)"


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
    parser = argparse.ArgumentParser(prog="sourcetrace", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="build or check a source-tracing corpus")
    csub = corpus.add_subparsers(dest="corpus_command", required=True)
    b = csub.add_parser("build", help="synthesise the TTS corpus in MLAAD's layout")
    b.add_argument("--out", required=True, help="output data root")
    b.add_argument("--preset", choices=("tiny", "demo", "full"), default="demo")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=0, help="parallel workers (default: all cores)")
    b.add_argument("--format", choices=("flac", "wav"), default="flac", help="canonical audio format")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = csub.add_parser("check", help="count clips per split/condition and validate every file")
    _add_data_args(c)
    c.add_argument("--min-seconds", type=float, default=2.0, help="flag clips shorter than this (the crop)")

    t = sub.add_parser("train", help="train and evaluate one model (no Ray)")
    _add_data_args(t)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last if it exists")

    s = sub.add_parser("sweep", help="run a sweep file with Ray Tune, every trial an MLflow run")
    s.add_argument("sweep_file", help="path to a sweeps/*.py file")
    _add_data_args(s)
    s.add_argument("--smoke", action="store_true", help="run the sweep's smoke-sized variant")
    s.add_argument("--address", default=None, help="Ray cluster address (default: local embedded Ray)")
    s.add_argument("--resume", action="store_true", help="restore an interrupted sweep of the same name")
    s.add_argument("--name", default=None, help="sweep name (default: the file's stem)")
    s.add_argument("--storage", default=None, help="Tune folder, shared by all nodes (default: ./ray_results)")
    s.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under ./mlruns)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial")
    s.add_argument("--no-analyze", action="store_true", help="skip the analyses of the best trial")

    r = sub.add_parser("report", help="Table-1 parquet reports of a finished sweep")
    r.add_argument("sweep_run", help="the sweep's Tune experiment folder (STORAGE/NAME)")
    r.add_argument("--out", default=None, help="report folder (default: SWEEP_RUN/report)")
    r.add_argument("--tracking-uri", default=None)

    u = sub.add_parser("ui", help="MLflow UI on the sweep store, bound to 127.0.0.1")
    u.add_argument("--tracking-uri", default=None, help="backend store (default: the embedded sqlite store)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)

    a = sub.add_parser("analyze", help="linear probe, confusion matrix, UMAP, DET of a trained model")
    a.add_argument("model", help=MODEL_HELP.split(" (")[0])
    _add_data_args(a, required=False)  # default: the data the model was trained on (its config.json)
    a.add_argument("--split", choices=("dev", "eval"), default="dev")
    a.add_argument("--out", default=None, help="output folder (default: MODEL/analysis_<split>)")

    e = sub.add_parser("enroll", help="add, extend, list or remove enrolled systems of a bundle")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--system", default=None, help="system name to enrol (a value, never a path: '/' is fine)")
    e.add_argument("--list", action="store_true", help="list the training and enrolled systems")
    e.add_argument("--remove", default=None, metavar="NAME", help="forget an enrolled system")
    _add_trace_args(e)
    e.add_argument("clips", nargs="*", help="audio files, folders, globs or @list.txt")

    ev = sub.add_parser("evaluate", help="score a model on any MLAAD-layout corpus, beside the featureless baseline")
    ev.add_argument("--model", required=True, help=MODEL_HELP)
    _add_data_args(ev)  # the corpus to score: its own train split defines known systems and conditions
    ev.add_argument("--split", default="eval", help="split to score (default: eval)")
    ev.add_argument("--out", default=None, help="output folder (default: MODEL/evaluate_<corpus>_<split>)")

    tr = sub.add_parser("trace", help="name the system behind each clip, or 'unknown'")
    tr.add_argument("--model", required=True, help=MODEL_HELP)
    tr.add_argument("--top-k", type=int, default=3)
    tr.add_argument("--format", choices=("table", "json", "csv"), default="table")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_trace_args(tr)
    tr.add_argument("clips", nargs="+", help="audio files, folders (recursive), globs or @list.txt")

    x = sub.add_parser("export", help="write a portable bundle of a checkpoint, run or sweep")
    x.add_argument("model", help="checkpoint, run or sweep folder")
    x.add_argument("--out", required=True, help="bundle folder to create")
    x.add_argument("--device", default="auto")
    x.add_argument("--onnx", action="store_true", help="also write OUT/embedding.onnx (parity-checked)")
    x.add_argument("--scorer", default=None, help="open-set scorer (default: the package's DEFAULT_SCORER)")
    _add_data_args(x, required=False)  # default: the data the model was trained on (its config.json)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key = args.command if args.command != "corpus" else f"corpus {args.corpus_command}"
    module, func = HANDLERS[key].split(":")
    interrupt.term_as_interrupt()  # SIGTERM (Slurm, Kubernetes, timeout) ends a command as Ctrl-C does
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except SourcetraceError as err:
        print(f"sourcetrace {key}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sourcetrace {key}: interrupted", file=sys.stderr)
        return interrupt.exit_code()


if __name__ == "__main__":
    sys.exit(main())
