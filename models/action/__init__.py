"""Action recognition (fight detection) by transfer learning on the shared EfficientNet-Lite0 trunk.

Modules, one concept each:

* :mod:`.config`    the frozen training/export configuration (``ActionConfig``)
* :mod:`.errors`    data errors (subclasses of :class:`pipeline.errors.VidwatchError`)
* :mod:`.video`     decoding a clip (mp4 or a folder of JPEGs) sampled by time at a fixed fps
* :mod:`.data`      the dataset of class folders, seeded stratified splits, k folds
* :mod:`.augment`   clip-consistent augmentation (crop, flip, colour jitter)
* :mod:`.cache`     per-frame ``c4`` features of every clip (clean + augmented views), on disk
* :mod:`.model`     neck (upper backbone blocks) + temporal heads
* :mod:`.windows`   T-frame windows cut from cached per-frame arrays (train: random; eval: all)
* :mod:`.train`     two-stage fine-tuning with early stopping, checkpoints and resume
* :mod:`.run`       a training run folder (config, split, logs, plots, metrics, predictions CSV)
* :mod:`.experiments` k-fold cross-validation of configurations (the comparison tables)
* :mod:`.metrics`   accuracy / precision / recall / F1 / AUC and the plots
* :mod:`.evaluate`  evaluating a model package through ``pipeline.runner`` (the live code path)
* :mod:`.export`    checkpoint -> model package (trunk + neck + head), torch-vs-ORT parity
* :mod:`.quantize`  optional INT8 static quantization of the neck, calibrated on real clips
* :mod:`.shipped`   the committed ``fight`` weights and ``build_shipped``
* :mod:`.demo`      the stitched demo clip and its score timeline
* :mod:`.cli`       the functions ``vidwatch train/eval/export`` call

Results and design notes: ``models/action/README.md``.
"""
