"""The book's ``dataset`` package on fastbp (see ``fastbp.book``)."""
