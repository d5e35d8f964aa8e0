"""Optuna glue: the only package that imports optuna.

- :mod:`.storage`: ``get_storage(None | url)``: sqlite for one worker, PostgreSQL (heartbeats,
  stale-trial retry) or a journal file for several.
- :mod:`.abtest`: the arm x seed study (``GridSampler``, no pruning) and the worker loop.
- :mod:`.trial`: one trial = one MLflow child run trained by the coordinator.
- :mod:`.session`: ``convopt ab-test`` end to end; :func:`session.run_ab_test` returns an
  :class:`~.session.ABResult` whose ``winner`` (:class:`~.report.Winner`: arm, trial run ids,
  evidence) is the input for registering a ``challenger``.
- :mod:`.registration`: a registrable winner -> one ensemble version aliased ``challenger``,
  its combination chosen on validation as ``convopt train`` ensembles choose it, with its
  evidence in version tags (no optuna).
- :mod:`.tune`: ``convopt tune``: multivariate TPE over ``config.search_spaces``, MedianPruner.
- :mod:`.worker`: ``convopt worker`` and local worker processes.
- :mod:`.report`, :mod:`.render`: the statistics of the report (pure) and its views;
  :mod:`.pairing`: seed-paired scores with failed cells as outcomes (``--on-failure``).

Submodules are imported on use: importing optuna costs about a second.
"""
