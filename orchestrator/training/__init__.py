"""MM PT and MM IT training of the projectors."""
