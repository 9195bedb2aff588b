"""Market data: L2 books, recent trades and tickers from the matching logs (`service`)."""
