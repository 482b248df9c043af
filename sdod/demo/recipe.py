"""The embedded demo defaults: the hyperparameters `make demo`, the DAGs' forms and the
quality benchmark train the sample data with (strings, as in a CreateTrainingJob request).

Why each value is what it is: `docs/quality.md`. In short: `resnet-lite` (maps from
stride 8) learns the sample data from scratch far sooner than `mobilenet-v3` at a similar
cost per step on a CPU; the sample set's 960 training images, 10 epochs with the learning
rate x0.1 after 8 and 9: 1200 steps of 8 images, 10-11 minutes on a 2-core machine
(more on its slow days), each image seen 10 times (240 images seen 40 times were learnt
by heart). 8 epochs (960 steps) fit 8 minutes but ended at 0.894-0.914, three runs of
five under 0.9 (row 29).
"""

from __future__ import annotations

DEMO_HYPERPARAMETERS = {
    "base_network": "resnet-lite",
    "use_pretrained_model": "0",
    "num_classes": "3",
    "num_training_samples": "960",
    "epochs": "10",
    "mini_batch_size": "8",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "lr_scheduler_step": "8,9",
    "lr_scheduler_factor": "0.1",
    "augmentation": "light",
    "image_shape": "300",
}
