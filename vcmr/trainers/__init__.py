"""One LightningModule per training stage, plus the ``train(cfg)`` entry points."""
