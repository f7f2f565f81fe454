"""pyspu: a batched IPsec engine."""
