"""Prediction of a device's performance on a workload from the store's other results.

`matrix`: the device-configuration x workload matrix of log performance, filled by reference-
device ratios, low-rank completion or spec-sheet regression, the method chosen by cross-validation
and intervals calibrated on held-out cells. `cells`: that matrix built from the store.
`spec`: the per-group spec-sheet regression `cost --candidate` and the report call.
"""

from edgerob.analysis.predict.cells import predict
from edgerob.analysis.predict.spec import (RESPONSE, fit_loglinear, leave_one_target_out,
                                           loto_rmse, predict_candidate, prediction_group)

__all__ = ["RESPONSE", "fit_loglinear", "leave_one_target_out", "loto_rmse", "predict",
           "predict_candidate", "prediction_group"]
