"""The embedded demo defaults: the hyperparameters `make demo`, the DAGs' forms and the
quality benchmark train the sample data with (strings, as in a CreateTrainingJob request).

Why each value is what it is: `docs/quality.md`."""

from __future__ import annotations

DEMO_HYPERPARAMETERS = {
    "base_network": "mobilenet-v3",
    "use_pretrained_model": "0",
    "num_classes": "3",
    "num_training_samples": "240",
    "epochs": "30",
    "mini_batch_size": "8",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "lr_scheduler_step": "22,27",
    "lr_scheduler_factor": "0.1",
    "augmentation": "light",
    "image_shape": "300",
}
