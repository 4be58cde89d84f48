"""Tests of model/: the network, its features and front ends, inference, data, training and evaluation."""
