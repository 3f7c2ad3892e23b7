"""Applications built on the job: synthetic data, training, evaluation, demo, pictures."""
