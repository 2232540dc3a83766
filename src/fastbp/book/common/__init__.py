"""The book's ``common`` package on fastbp (see ``fastbp.book``)."""
