"""Anomaly detection that learns each camera's normal from unlabeled footage.

Per 16x16-pixel location of the frame, two scores: motion (DIS optical flow statistics against a
per-location Gaussian) and appearance (EfficientNet-Lite0 ``c4`` patch against a per-location
k-NN coreset of normal patches). Fitting is numpy (``pipeline.calibration``), so a camera can
also fit itself live. Entry points in :mod:`models.anomaly.cli`.
"""
