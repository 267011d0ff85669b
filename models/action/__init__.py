"""Action recognition (fight detection) by transfer learning: EfficientNet-Lite0 (ImageNet) fine-tuned
on difference images of consecutive frames, with a temporal head over per-frame features.

Modules, one concept each:

* :mod:`.config`    the frozen training/export configuration (``ActionConfig``)
* :mod:`.errors`    data errors (subclasses of :class:`pipeline.errors.VidwatchError`)
* :mod:`.video`     decoding a clip (mp4 or a folder of JPEGs) sampled by time at a fixed fps
* :mod:`.data`      the dataset of class folders, seeded stratified splits, k folds
* :mod:`.augment`   clip-consistent augmentation (crop, flip, colour jitter)
* :mod:`.cache`     decoded clips on disk, sampled and resized exactly as live capture sends them
* :mod:`.model`     motion stream (backbone on difference images, per frame) + temporal heads
* :mod:`.windows`   T-frame windows cut from per-frame arrays (train: random; eval: all)
* :mod:`.train`     two-stage fine-tuning (frozen head, then top blocks) with early stopping, resume
* :mod:`.run`       a training run folder (config, split, logs, plots, metrics, predictions CSV)
* :mod:`.experiments` k-fold cross-validation of configurations (the comparison tables)
* :mod:`.metrics`   accuracy / precision / recall / F1 / AUC and the plots
* :mod:`.evaluate`  evaluating a model package through ``pipeline.runner`` (the live code path)
* :mod:`.export`    checkpoint -> model package (motion + head graphs), torch-vs-ORT parity
* :mod:`.quantize`  optional INT8 static quantization of the motion graph, calibrated on real clips
* :mod:`.shipped`   the committed ``fight`` weights and ``build_shipped``
* :mod:`.demo`      the stitched demo clip and its score timeline
* :mod:`.cli`       the functions ``vidwatch train/eval/export`` call

Results and design notes: ``models/action/README.md``.
"""
