"""Every method of the tables behind one call: what it may use (its context) and one run end to end."""
