"""The folder of the Hydra apps' configs: ``conf/`` of the checkout (:func:`mmbert.data.paths.repo_root`).

Given to ``@hydra.main`` as an absolute path because Hydra otherwise resolves a relative ``config_path``
against the module that declares the app, which is here, not the repository root where ``conf/`` lives;
so the apps find their configs from any working directory and through either entry (``train.py`` or
``mmbert-train``)."""

from __future__ import annotations

from mmbert.data.paths import repo_root

CONF_DIR = str(repo_root() / "conf")
