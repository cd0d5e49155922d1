"""Using a trained HiFiC: a codec from any source (`load_codec`), SavedModel, stock-op and
TFLite exports with their in-process codecs, guarded decoding and `hific serve`."""
