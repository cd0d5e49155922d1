"""Using a trained HiFiC: the .hific container, SavedModel export and loading, bundled codecs."""
