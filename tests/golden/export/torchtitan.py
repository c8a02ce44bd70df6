# written by `mixopt export --format torchtitan`
# In the job config (.toml):
#   [training]
#   dataset = "mixopt_mixture"
from datasets import interleave_datasets, load_dataset

from torchtitan.hf_datasets import DatasetConfig
from torchtitan.hf_datasets.text_datasets import DATASETS

MIXOPT_PATHS = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
MIXOPT_PROBABILITIES = [
    0.454,
    0.163,
    0.163,
    0.22,
]


def load_mixopt_mixture(dataset_path: str):
    sources = [load_dataset(p, split="train", streaming=True) for p in MIXOPT_PATHS]
    return interleave_datasets(
        sources,
        probabilities=MIXOPT_PROBABILITIES,
        seed=0,
        stopping_strategy="all_exhausted",
    )


DATASETS["mixopt_mixture"] = DatasetConfig(
    path="mixopt",
    loader=load_mixopt_mixture,
    sample_processor=lambda sample: sample["text"],
)
