"""What every run takes in: datasets as tensors (:mod:`.data`), base classifiers (:mod:`.models`) and their
checkpoints (:mod:`.checkpoint`). Builds on :mod:`wsmooth_ext.core` only."""
