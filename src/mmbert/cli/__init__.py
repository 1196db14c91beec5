"""Every command line of the project, one module each: ``train``, ``merge``, ``evaluate`` (Hydra apps over
``conf/``), ``convert``, ``plan``, ``prepare`` and ``toy_tasks``. Each is a thin shell over the library: it
parses the arguments, calls one function and turns a user-fixable error into one line (:mod:`.errors`).

Installed as ``mmbert-<name>`` console scripts; the repository's ``train.py``, ``merge.py`` and
``evaluate.py`` run the same mains."""
