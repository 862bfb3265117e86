"""Experiments: workflows that chain training, certification (or attacks) and analysis into one resumable,
rerunnable comparison with a results table. One module per experiment; each is run by a sibling module of
``wsmooth_ext.commands.experiments`` (``wsmooth experiment NAME``), except ``demo``, run by ``wsmooth demo``
(``wsmooth_ext.commands.demo``). Nothing here parses command lines."""
