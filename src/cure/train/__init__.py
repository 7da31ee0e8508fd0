"""The training stage: CURE's policy-gradient objective, engines (DeepSpeed, torch), checkpoints, PyTorchJob."""
