"""The digits benchmark (``fastdiode demo``): DIODE end to end on real handwritten digits."""
