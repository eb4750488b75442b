"""Other people's model layouts: the S4 authors' (state-spaces/s4) state dicts in and out."""
