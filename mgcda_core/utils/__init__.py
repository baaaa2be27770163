"""Small shared helpers: atomic file writing, image I/O, FLOP counting."""
