"""Training data: manifests, windowed datasets, augmentation, label balancing, pseudo-labels.

The training stages import from here so that every stage sees the same
definition of a labelled recording and of a 5 s training window.
"""

from model.data.manifest import SENTIMENTS, ManifestEntry, ManifestError, read_manifest, write_manifest

__all__ = ["SENTIMENTS", "ManifestEntry", "ManifestError", "read_manifest", "write_manifest"]
