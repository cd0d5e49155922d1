"""Model families (each subpackage holds one paper's networks, entropy model and objective),
the bundled codecs (zoo) and what a user's name or path for a codec means (sources)."""
