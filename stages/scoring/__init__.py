"""What the score and compare stages need beyond a page: a model's answer parsed (answers.py), what is scored and
how (fields.py), one model's scores (measures.py), two models compared item by item (paired.py)."""
