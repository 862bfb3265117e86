"""Plumbing shared by the layers above the core: the stated range of every numeric option (:mod:`.ranges`),
progress bars (:mod:`.progress`) and a process's place in a torchrun job (:mod:`.distributed`)."""
