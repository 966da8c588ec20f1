"""pipnet-lit's Hydra plugins (found by Hydra's plugin discovery in the ``hydra_plugins`` namespace)."""
