"""The DeepSpeed trainer: config, engine, objectives, run checkpoints, distributed helpers, logging."""
