"""The three training stages: self-supervised pretraining, ASR, classifier."""
