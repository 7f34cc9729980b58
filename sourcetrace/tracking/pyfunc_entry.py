"""The code of the MLflow model a sweep registers (MLflow "models from code"): nothing is pickled.

MLflow copies this file into the logged model and runs it when the model loads; it is not imported by
sourcetrace itself (``set_model`` registers the model object as the one this file defines).
"""

from mlflow.models import set_model

from sourcetrace.tracking.pyfunc import BundleModel

set_model(BundleModel())
