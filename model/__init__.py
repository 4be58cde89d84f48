"""The voice tone neural model: front end, ASR branch, classifier, training stages.

``model.load()`` is the one entry point the streaming worker needs.
"""

from model.inference import VoiceToneModel, load

__all__ = ["VoiceToneModel", "load"]
