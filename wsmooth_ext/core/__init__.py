"""Core math: the noise ops and their pure-tensor reference (:mod:`.ops`, :mod:`.reference`), the noise registry
(:mod:`.noises`), local flow plans (:mod:`.flows`), exact Wasserstein distances (:mod:`.wasserstein`), binomial
statistics and certificates (:mod:`.statistics`, :mod:`.certificates`), the smoothed classifier
(:mod:`.smooth`) and faster base-classifier inference (:mod:`.inference`). Nothing here reads files or
parses options; every other layer builds on this one."""
