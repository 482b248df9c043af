"""The embedded demo defaults: the hyperparameters `make demo`, the DAGs' forms and the
quality benchmark train the sample data with (strings, as in a CreateTrainingJob request).

Why each value is what it is: `docs/quality.md`. In short: `resnet-lite` learns the sample
data from scratch far sooner than `mobilenet-v3` at the same cost per step on a CPU; 40
epochs with the learning rate ×0.1 at 30 and 36 fit the ~8 CPU minutes of a 2-core machine.
"""

from __future__ import annotations

DEMO_HYPERPARAMETERS = {
    "base_network": "resnet-lite",
    "use_pretrained_model": "0",
    "num_classes": "3",
    "num_training_samples": "240",
    "epochs": "40",
    "mini_batch_size": "8",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "lr_scheduler_step": "30,36",
    "lr_scheduler_factor": "0.1",
    "augmentation": "light",
    "image_shape": "300",
}
