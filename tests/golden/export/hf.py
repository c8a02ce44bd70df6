# written by `mixopt export --format hf`
# NOTE: these are shares of training tokens, but interleave_datasets draws documents:
# a domain with longer documents gets more than its share. Re-export with
# --cache CACHE (or --doc-tokens NAME=N) to convert them.
from datasets import interleave_datasets, load_dataset

paths = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
token_shares = [
    0.454,
    0.163,
    0.163,
    0.22,
]
probabilities = token_shares
sources = [load_dataset(path, split="train", streaming=True) for path in paths]
mixture = interleave_datasets(
    sources,
    probabilities=probabilities,
    seed=0,
    stopping_strategy="all_exhausted",
)
