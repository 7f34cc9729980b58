"""The model a sweep hands over as an MLflow model: a pyfunc wrapping its bundle, registered under the sweep's name.

``log_bundle_model`` logs the bundle (``EXP/best_model``) on the handed-over run as an MLflow model and
registers it in the Model Registry under the sweep's name, one version per sweep. The model is logged "from
code" (``pyfunc_entry.py``, nothing pickled): loading it imports ``sourcetrace`` and reads the bundle with
``SourceTracer``, as ``sourcetrace trace`` does.

Input: a DataFrame with a ``clip`` column (audio file paths, readable where the model runs) or a
``waveform`` column (mono float samples at the bundle's sample rate). Output: one row per clip with the
``decision`` (a system or "unknown"), the ``top_systems`` and their ``top_scores`` (``params={"top_k": k}``,
default 3), the ``knownness`` score, ``p_known`` when the bundle is calibrated, and ``error`` (empty unless
the clip could not be read).

    model = mlflow.pyfunc.load_model("models:/demo/1")
    model.predict(pd.DataFrame({"clip": ["clip.wav"]}))
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.errors import SourcetraceError

ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # the model's code: builds a BundleModel
MODEL_NAME = "model"  # the logged model's name on its run
EXAMPLE_SECONDS = 1.0  # the input example: a quiet, seeded noise waveform this long
OUTPUT_COLUMNS = ["clip", "decision", "top_systems", "top_scores", "knownness", "p_known", "error"]

try:  # mlflow is a dependency, but this module must import where only the bundle is read
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object


class BundleModel(PythonModel):
    """``mlflow.pyfunc`` model over a bundle (``artifacts["bundle"]``), traced on the CPU unless asked."""

    def load_context(self, context):
        from sourcetrace.bundle.model import SourceTracer

        self.tracer = SourceTracer(context.artifacts["bundle"], device="cpu")

    def predict(self, context, model_input, params=None):
        return predict_frame(self.tracer, model_input, int((params or {}).get("top_k", 3)))


def clips_of(frame: pd.DataFrame) -> list:
    """The clips of an input frame: its ``clip`` paths or its ``waveform`` arrays (one column, not both)."""
    if not isinstance(frame, pd.DataFrame):
        raise SourcetraceError(f"the model takes a DataFrame with a clip or a waveform column, not {type(frame)}")
    cols = [c for c in ("clip", "waveform") if c in frame.columns]
    if len(cols) != 1:
        raise SourcetraceError(
            f"the input needs exactly one of the columns clip (paths) and waveform (samples); it has {list(frame)}"
        )
    if cols[0] == "clip":
        return [str(p) for p in frame["clip"]]
    return [np.asarray(w, dtype=np.float32) for w in frame["waveform"]]


def predict_frame(tracer, frame: pd.DataFrame, top_k: int = 3) -> pd.DataFrame:
    """``tracer.trace`` of the frame's clips, one output row per clip (``OUTPUT_COLUMNS``)."""
    clips, rows = clips_of(frame), []
    for a in tracer.trace(clips, top_k=top_k):
        rows.append(
            {
                "clip": a.path,
                "decision": a.decision or "",
                "top_systems": [s for s, _ in a.top],
                "top_scores": [float(v) for _, v in a.top],
                "knownness": float("nan") if a.knownness is None else a.knownness,
                "p_known": float("nan") if a.p_known is None else a.p_known,
                "error": a.error or "",
            }
        )
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def signature():
    """Input: an optional ``clip`` (string) or ``waveform`` (array of doubles) column; ``top_k`` a parameter."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "clip", required=False), ColSpec(Array("double"), "waveform", required=False)])
    outputs = Schema(
        [
            ColSpec("string", "clip"),
            ColSpec("string", "decision"),
            ColSpec(Array("string"), "top_systems"),
            ColSpec(Array("double"), "top_scores"),
            ColSpec("double", "knownness"),
            ColSpec("double", "p_known", required=False),
            ColSpec("string", "error"),
        ]
    )
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("top_k", "long", 3)]))


def input_example(sample_rate: int) -> pd.DataFrame:
    """One quiet seeded-noise waveform (a request that runs anywhere: no file needed)."""
    rng = np.random.default_rng(0)
    wave = (0.05 * rng.standard_normal(int(EXAMPLE_SECONDS * sample_rate))).astype(np.float32)
    return pd.DataFrame({"waveform": [wave.tolist()]})


def registered_version(client, name: str, run_id: str):
    """The version of registered model ``name`` made from ``run_id``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.run_id == run_id), None)


def log_bundle_model(store, experiment: str, run_id: str, bundle: str | Path, name: str | None = None):
    """Log ``bundle`` on ``run_id`` as an MLflow pyfunc model and register it as a new version of ``name``
    (default: the sweep's name); a run that has a version already keeps it (a sweep reported again).
    Returns the model version."""
    import mlflow

    from sourcetrace.bundle.model import SourceTracer
    from sourcetrace.tracking.store import client_for

    name = name or experiment
    client = client_for(store)
    done = registered_version(client, name, run_id)
    if done is not None:
        return done
    rate = SourceTracer(bundle, device="cpu").config.data.sample_rate
    status = client.get_run(run_id).info.status
    with _tracking_uri(store.uri):  # the fluent API logs the model; the registry follows the tracking URI
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(ENTRY),
                artifacts={"bundle": str(Path(bundle).resolve())},
                signature=signature(),
                input_example=input_example(rate),
                registered_model_name=name,
                pip_requirements=[f"sourcetrace=={_version()}"],
            )
        client.set_terminated(run_id, status=status)  # reopened to log the model: its own status again
    return client.get_model_version(name, str(info.registered_model_version))


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """MLflow's fluent tracking URI set to ``uri`` for the block, then as it was (unset, or its value and
    ``MLFLOW_TRACKING_URI``, which ``mlflow.set_tracking_uri`` also writes)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _version() -> str:
    from sourcetrace.version import __version__

    return __version__


def log_handed_over_model(store, experiment: str, run_id: str, bundle: str | Path) -> None:
    """``log_bundle_model``, a failure a note on stderr: the bundle on disk and the sweep's results stand."""
    try:
        version = log_bundle_model(store, experiment, run_id, bundle)
    except Exception as err:  # mlflow raises many types for a store or model that cannot be written
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(
            f"note: the model handed over was not registered in MLflow: {type(err).__name__}: {first}", file=sys.stderr
        )
        return
    print(f"registered MLflow model: models:/{version.name}/{version.version}", flush=True)
