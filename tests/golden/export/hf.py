# written by `mixopt export --format hf`
from datasets import interleave_datasets, load_dataset

paths = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
probabilities = [
    0.454,
    0.163,
    0.163,
    0.22,
]
sources = [load_dataset(path, split="train", streaming=True) for path in paths]
mixture = interleave_datasets(
    sources,
    probabilities=probabilities,
    seed=0,
    stopping_strategy="all_exhausted",
)
