"""What the build stage needs beyond a page: the input formats behind one registry (formats/), the files the data
params name (sources.py), the records they yield (records.py), the checks of every row and image (checks.py) and
the seeded split (split.py)."""
