"""Prediction of a device's performance on a workload from the store's other results.

`matrix`: the device-configuration x workload matrix of log performance, filled by reference-
device ratios, low-rank completion or spec-sheet regression, the method chosen by cross-validation
and intervals calibrated on held-out cells. `cells`: that matrix built from the store, and
`predict`. `candidate`: the same predictor over every workload for `cost --candidate`, and each
device's results held out for the report. `spec`: the spec-sheet regression cold devices use.
"""

from edgerob.analysis.predict.candidate import held_out, predict_candidate
from edgerob.analysis.predict.cells import predict
from edgerob.analysis.predict.spec import fit_loglinear, loto_rmse

__all__ = ["fit_loglinear", "held_out", "loto_rmse", "predict", "predict_candidate"]
