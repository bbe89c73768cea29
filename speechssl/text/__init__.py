"""Text for the BERT-style upstreams (Devlin et al., 2019): the WordPiece tokenizer
(tokenizer.py) and text items and token batches (data.py). The text upstreams themselves
are speechssl/upstream/bert.py (with their shared base) and gpt.py."""
