"""voicetone: real-time voice tone (speech sentiment) analysis over Kafka."""

__version__ = "0.1.0"
