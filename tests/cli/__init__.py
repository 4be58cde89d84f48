"""Tests of the voicetone command line and what it drives: analyze, replay, report, Chime, logs, broker handling."""
