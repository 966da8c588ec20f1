"""pipnet-lit's Optuna sweeper for Hydra (``hydra/sweeper=pipnet_optuna``), found by Hydra's plugin scan."""
