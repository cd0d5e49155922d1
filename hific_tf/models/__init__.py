"""Model families. Each subpackage holds one paper's networks, entropy model and objective."""
